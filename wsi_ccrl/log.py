"""Package logging, configured once by the CLI before any heavy import (TIAToolbox edits the root
logger on import, so ours must be in place first and must not depend on the root's handlers)."""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "wsi_ccrl"


def get_logger(name: str | None = None) -> logging.Logger:
    """The package logger, or a child of it (``get_logger(__name__)``)."""
    if name is None or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


def configure_logging(verbosity: int = 0) -> None:
    """-1 quiet (warnings), 0 info, 1 debug. Idempotent: one handler on the package logger."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_wsi_ccrl", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler._wsi_ccrl = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    for handler in logger.handlers:
        handler.setLevel(level)


def progress_enabled() -> bool:
    """Progress bars follow the logger: shown at INFO and below, hidden by --quiet."""
    return logging.getLogger(LOGGER_NAME).getEffectiveLevel() <= logging.INFO
