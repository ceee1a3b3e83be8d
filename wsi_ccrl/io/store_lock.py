"""One writer per cell store: ``<name>.zarr.lock`` names the process that is writing it.

The lock file is created exclusively (``O_CREAT | O_EXCL``, atomic on local and NFS file systems)
and holds the writer's host, pid, process start time and a token. A second writer reads it and
refuses in one line, naming the holder. A lock is stale when its host is this one and its process is
gone (or the pid now belongs to a process started later): it is moved aside and taken over. A lock
of another host cannot be checked from here; the message says which file to delete if that run is
gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.log import get_logger

log = get_logger(__name__)

LOCK_SUFFIX = ".lock"
_CREATING_S = 10.0  # an unreadable lock younger than this is being written by its creator


class StoreBusy(WsiCcrlError):
    """Another process is writing this store."""


class StoreLock:
    """``with StoreLock(store_path):`` the one writer of ``store_path`` (``x.zarr``)."""

    def __init__(self, store_path: str | Path):
        self.store = Path(store_path)
        self.path = self.store.with_name(self.store.name + LOCK_SUFFIX)
        self._token: str | None = None

    @property
    def held(self) -> bool:
        return self._token is not None

    def acquire(self) -> StoreLock:
        """Take the lock, or raise ``StoreBusy`` naming the process that holds it."""
        if self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is taken over; a race for it is retried
            token = uuid.uuid4().hex
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if not _is_stale(self.path, holder):
                    raise StoreBusy(self._busy_message(holder)) from None
                self._break(holder)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(_me(token), f)
                f.flush()
                os.fsync(f.fileno())
            self._token = token
            return self
        raise StoreBusy(self._busy_message(_read(self.path)))

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self._token is None:
            return
        holder = _read(self.path)
        if holder is not None and holder.get("token") == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _break(self, seen: dict[str, Any] | None) -> None:
        """Move a stale lock aside (atomic); if another process replaced it meanwhile with a live
        one, put that back."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process broke it first
        if _read(aside) != seen:
            with contextlib.suppress(OSError):  # restore it, unless yet another lock appeared
                os.link(aside, self.path)
        else:
            who = _describe(seen) if seen else "an unreadable lock"
            log.warning("%s: taking over a stale lock (%s is gone)", self.store, who)
        aside.unlink(missing_ok=True)

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        who = _describe(holder) if holder else "another process (its lock is being written)"
        return (
            f"{self.store} is being written by {who}; "
            f"if that run is gone, delete {self.path} and run again"
        )


def _me(token: str) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "token": token,
    }


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "pid" in data and "host" in data else None


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder['pid']} on {holder['host']} (since {holder.get('since', '?')})"


def _is_stale(path: Path, holder: dict[str, Any] | None) -> bool:
    if holder is None:  # empty or torn: its creator is writing it, or died doing so
        try:
            return time.time() - path.stat().st_mtime > _CREATING_S
        except FileNotFoundError:
            return True
    if holder["host"] != socket.gethostname():
        return False  # another machine's process: cannot be checked from here
    try:
        started = psutil.Process(int(holder["pid"])).create_time()
    except (psutil.NoSuchProcess, ValueError):  # gone (a zombie too), or no pid at all
        return True
    except psutil.AccessDenied:  # another user's live process
        return False
    recorded = holder.get("started")
    return recorded is not None and abs(started - float(recorded)) > 1.0  # a reused pid
