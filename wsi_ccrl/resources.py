"""Files shipped with the package: the config profiles and the sample slide.

They live in ``configs/`` (installed as the ``wsi_ccrl_configs`` package) and ``wsi_ccrl/data`` and
are found with importlib.resources, so an installed wheel has them as a clone does. A profile can be
named instead of given as a path (``--config quick``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from wsi_ccrl.errors import WsiCcrlError

SAMPLE_NAME = "CMU-1-Small-Region.svs"
PROFILES = "wsi_ccrl_configs"  # configs/ at the top of the repository


def bundled(*parts: str, package: str = "wsi_ccrl") -> Path:
    """A shipped file as a real path (wheels install unzipped; OpenSlide needs a file name)."""
    path = Path(str(files(package).joinpath(*parts)))
    if not path.is_file():
        raise WsiCcrlError(f"{'/'.join(parts)} is missing from this installation of wsi-ccrl")
    return path


def sample_slide() -> Path:
    """The bundled sample slide (OpenSlide's CMU-1-Small-Region, see ``wsi_ccrl/data``)."""
    return bundled("data", SAMPLE_NAME)


def profiles() -> list[str]:
    """Names of the shipped config profiles (``ccrl``, ``quick``, ``benchmark-consep``, ...)."""
    return sorted(p.stem for p in Path(str(files(PROFILES))).glob("*.yaml"))


def profile(name: str) -> Path:
    """The shipped profile ``name`` (``quick`` or ``quick.yaml``)."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in profiles():
        raise WsiCcrlError(f"no config profile {name!r} (shipped: {', '.join(profiles())})")
    return bundled(f"{stem}.yaml", package=PROFILES)
