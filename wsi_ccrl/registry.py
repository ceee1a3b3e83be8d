"""Named extension points (segmenters, baselines, export formats, benchmark data sets), timm-style.

An entry registers where it is defined (``@SEGMENTERS.register("watershed")``); the ones shipped
in the package are also listed by module, so a heavy module (TIAToolbox, torch, anndata) is
imported only when its entry is asked for. Config checks and the command line read ``names()``,
so no list of names is written twice.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from wsi_ccrl.errors import ConfigError


class Registry(dict):
    """name -> entry, with lazily imported shipped entries and one-line errors for the rest.

    Args:
        modules: name -> the module that registers it (imported on first use).
        unknown: the error for an unknown name, formatted with ``name`` and ``known``.
        error: the error class (a user's mistake in a config: ``ConfigError``).
    """

    def __init__(self, modules: dict[str, str], unknown: str, error: type[Exception] = ConfigError):
        super().__init__()
        self.modules, self.unknown, self.error = dict(modules), unknown, error

    def register(self, name: str, transform: Callable[[Any], Any] | None = None) -> Callable:
        """Decorator: stores the class or factory (``transform(obj)`` if given) under ``name``; a
        class also gets ``name`` as its ``name`` attribute."""

        def wrap(obj: Any) -> Any:
            if isinstance(obj, type):
                obj.name = name
            self[name] = transform(obj) if transform else obj
            return obj

        return wrap

    def names(self) -> tuple[str, ...]:
        """The shipped names first (in their order), then those registered since."""
        return tuple(dict.fromkeys([*self.modules, *self]))

    def load(self, name: str) -> bool:
        """Import the module that registers ``name``; False when it is unknown or not installed."""
        if name not in self and name in self.modules:
            module = self.modules[name]
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a real missing dependency inside an existing module
                    raise
        return name in self

    def entry(self, name: str) -> Any:
        """The entry ``name``, or one line naming the known ones."""
        if not self.load(name):
            known = ", ".join(self.names())
            raise self.error(self.unknown.format(name=name, known=known))
        return self[name]
