"""Where work runs and how it writes: one device resolver for every command (segment, train,
label, benchmark), one way to write a file atomically (temporary name, then rename), and one way
to read a torch file (weights only, one clear line when it is not what it should be); and a way
to hand freed heap back to the OS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ccrl.errors import WsiCcrlError

if TYPE_CHECKING:
    import torch

__all__ = [
    "atomic_save_torch",
    "atomic_write",
    "atomic_write_text",
    "read_torch_file",
    "release_freed_heap",
    "resolve_device",
    "resolve_gpus",
]


@contextmanager
def atomic_write(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``<name>.tmp<suffix>``) to write to; on success it
    replaces ``path`` in one rename, on any failure it is removed and ``path`` is left as it was.

    ``suffix`` is for writers that insist on a file ending (``np.savez`` wants ``.npz``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def read_torch_file(path: str | Path, what: str, hint: str) -> Any:
    """``torch.load(weights_only=True)``, where a file torch cannot read is one line naming it and
    ``what`` it should be: never torch's paragraphs, which even suggest ``weights_only=False``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:  # missing, a folder, no permission: the file itself is the problem
        raise WsiCcrlError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except Exception:  # not a torch file, or one holding pickled code (another tool's model)
        raise WsiCcrlError(f"{path} is not a {what} ({hint})") from None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when one is visible, else the CPU; ``cuda``/``cuda:N`` must
    exist (one clear error otherwise, naming what is visible)."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise WsiCcrlError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise WsiCcrlError(f"--device {device}: no CUDA GPU is visible (use --device cpu)")
        if resolved.index is not None and resolved.index >= count:
            raise WsiCcrlError(f"--device {device}: only {count} CUDA GPU(s) visible")
    elif resolved.type != "cpu":
        raise WsiCcrlError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return resolved


def resolve_gpus(device: torch.device, gpus: tuple[int, ...] | list[int] | None) -> list[int]:
    """The GPUs a command spreads its batches over (DataParallel), one rule for every command:
    ``gpus`` when given, else ``cuda:N`` alone, else every visible GPU; [] on the CPU."""
    import torch

    if device.type != "cuda":
        return []
    count = torch.cuda.device_count()
    every = [device.index] if device.index is not None else list(range(count))
    ids = list(gpus) if gpus else every
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise WsiCcrlError(f"--gpus {bad[0]} does not exist ({count} GPU(s) visible)")
    return ids


def release_freed_heap() -> None:
    """Return the heap that glibc keeps after frees to the OS (``malloc_trim``); no-op elsewhere.

    Tiles of a dozen shapes through torch on a CPU leave freed buffers of every size in the heap,
    so without it a whole slide's peak RSS grew with the slide (2.6 / 3.0 / 3.5 GB at 10,000² /
    20,000² / 40,000²; BENCHMARKS.md).
    """
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None
