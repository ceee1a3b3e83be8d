"""Fault injection for the reliability tests, loaded by a CLI subprocess through PYTHONPATH.

``WSI_CCRL_FAULT_ENOSPC=TEXT``: every file opened for writing whose path contains TEXT fails on
its first write with ENOSPC, as on a full disk. Nothing of the package is changed.
"""

import builtins
import errno
import os

_match = os.environ.get("WSI_CCRL_FAULT_ENOSPC")
if _match:
    _open = builtins.open

    class _FullDisk:
        def __init__(self, f, name):
            self._f, self._name = f, name

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._name)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def _faulty_open(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax") and _match in str(file):
            return _FullDisk(f, str(file))
        return f

    builtins.open = _faulty_open
