"""Many slides in, one cell store each: the cohort's inputs (slides, folders, list files), its
shards for job arrays, and the run that segments them one after another (``pipeline`` does each
slide); a failing slide is recorded and the rest go on."""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from wsi_ccrl.config import SegmentConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.plain_image import IMAGE_SUFFIXES
from wsi_ccrl.io.store import PARTIAL_SUFFIX, CellStore
from wsi_ccrl.io.store_lock import StoreBusy
from wsi_ccrl.log import get_logger
from wsi_ccrl.segment.pipeline import ensure_writable, segment_slide, store_path_for

log = get_logger(__name__)

SLIDE_LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")
# what a folder given as input contributes: single-file slide formats and plain images (a MIRAX
# .mrxs comes with a folder of its own, a DICOM slide is many files: list those explicitly)
FOLDER_SUFFIXES = (".svs", ".ndpi", ".scn", ".svslide", ".bif", ".qptiff", *IMAGE_SUFFIXES)


@dataclass
class SegmentReport:
    """What a multi-slide run did: finished stores and (slide, one-line reason) failures."""

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    busy: list[tuple[str, str]] = field(default_factory=list)  # another run is writing them

    @property
    def ok(self) -> bool:
        return not self.failed


def expand_slide_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Slide paths, with text files (one path per line; ``#`` comments) and folders (their slides
    and images, sorted) expanded in place.

    Relative paths in a list file are taken relative to the list's folder.
    """
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir() and not item.name.endswith((".zarr", PARTIAL_SUFFIX)):
            found = sorted(p for p in item.iterdir() if _is_slide_file(p))
            if not found:
                raise WsiCcrlError(
                    f"no slides or images in folder {item} (looked for "
                    f"{', '.join(sorted(FOLDER_SUFFIXES))})"
                )
            out.extend(found)
        elif item.suffix.lower() in SLIDE_LIST_SUFFIXES and item.is_file():
            for line in item.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    p = Path(line).expanduser()
                    out.append(p if p.is_absolute() else item.parent / p)
        else:
            out.append(item)
    return out


def _is_slide_file(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in FOLDER_SUFFIXES
    )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) to (I, N)."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise WsiCcrlError(f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise WsiCcrlError(f"--shard {text}: need 0 <= I < N")
    return i, n


def select_shard(items: list, shard: tuple[int, int] | None) -> list:
    """Every N-th item starting at I, so a job array of N tasks covers each item once."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items[i::n])


def segment_slides(
    paths: Iterable[str | Path],
    out_dir: str | Path,
    config: SegmentConfig | None = None,
    shard: tuple[int, int] | str | None = None,
) -> SegmentReport:
    """Segment many slides one after another; a failing slide is recorded and the rest go on.

    Args:
        paths: slide files and/or text files listing slides.
        out_dir: folder receiving one ``<stem>.zarr`` per slide.
        config: segmentation settings.
        shard: (I, N) or "I/N": process slides I, I+N, I+2N, ... of the list.
    """
    from wsi_ccrl.segment import build_segmenter

    cfg = config or SegmentConfig()
    if isinstance(shard, str):
        shard = parse_shard(shard)
    slides = select_shard(expand_slide_inputs(paths), shard)
    out_dir = Path(out_dir)
    ensure_writable(out_dir)
    report = SegmentReport()
    if not slides:
        log.warning("no slides to segment%s", f" in shard {shard[0]}/{shard[1]}" if shard else "")
        return report
    _check_unique_stems(slides)
    seg = build_segmenter(cfg)  # once: a model loads once for the whole cohort
    for k, path in enumerate(slides, 1):
        log.info("[%d/%d] %s", k, len(slides), path)
        target = store_path_for(path, out_dir)
        try:
            if target.exists() and not cfg.overwrite:
                CellStore.open(target)  # a complete store: skip it
                log.info("%s: already segmented (%s); skipping", path, target)
                report.skipped.append(target)
                continue
            store = segment_slide(path, out_dir, cfg, segmenter=seg)
            report.done.append(store.path)
        except StoreBusy as exc:  # not a failure: that run will finish the store
            log.warning("%s: skipped: %s", path, exc)
            report.busy.append((str(path), str(exc)))
        except WsiCcrlError as exc:
            log.error("%s: %s", path, exc)
            report.failed.append((str(path), str(exc)))
        except Exception as exc:  # one bad slide must not stop a cohort run
            log.error("%s: unexpected %s: %s", path, type(exc).__name__, exc)
            log.debug("%s", traceback.format_exc())
            report.failed.append((str(path), f"{type(exc).__name__}: {exc}"))
    if report.failed:
        log.error("%d of %d slides failed:", len(report.failed), len(slides))
        for path, reason in report.failed:
            log.error("  %s: %s", path, reason)
    return report


def _check_unique_stems(slides: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in slides:
        stem = p.stem
        if stem in seen and seen[stem] != p:
            raise WsiCcrlError(
                f"two slides would write the same store {stem}.zarr: {seen[stem]} and {p}"
            )
        seen[stem] = p
