"""One writer per store: the lock file, stale locks, and two `segment` runs at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import SAMPLE_SLIDE

from wsi_ccrl.io.store import CellStore, CellStoreWriter
from wsi_ccrl.io.store_lock import StoreBusy, StoreLock


def _holder(lock: StoreLock) -> dict:
    return json.loads(lock.path.read_text())


def test_a_second_lock_names_the_holder_and_release_frees_it(tmp_path):
    first = StoreLock(tmp_path / "s.zarr").acquire()
    held = _holder(first)
    assert first.path.name == "s.zarr.lock"
    assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
    with pytest.raises(StoreBusy) as err:
        StoreLock(tmp_path / "s.zarr").acquire()
    assert str(err.value) == (
        f"{tmp_path / 's.zarr'} is being written by pid {os.getpid()} on {held['host']} "
        f"(since {held['since']}); if that run is gone, delete {first.path} and run again"
    )
    first.release()
    assert not first.path.exists()
    with StoreLock(tmp_path / "s.zarr") as again:
        assert again.held
    assert not again.path.exists()


def test_stale_locks_are_taken_over(tmp_path, caplog):
    lock = StoreLock(tmp_path / "s.zarr")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    here = socket.gethostname()
    dead = {"host": here, "pid": int(gone.stdout), "started": 0.0, "since": "x", "token": "t"}
    me = psutil.Process()
    reused = {**dead, "pid": os.getpid(), "started": me.create_time() - 3600}  # pid reused
    for stale in (dead, reused):
        lock.path.write_text(json.dumps(stale))
        lock.acquire()
        assert _holder(lock)["pid"] == os.getpid() and _holder(lock)["token"] != "t"
        lock.release()
    assert "taking over a stale lock" in caplog.text
    # an unreadable lock: being written if it is recent, stale if it is old
    lock.path.write_text("")
    with pytest.raises(StoreBusy, match="its lock is being written"):
        lock.acquire()
    os.utime(lock.path, (time.time() - 60, time.time() - 60))
    lock.acquire().release()
    # another host's process cannot be checked from here: never taken over
    lock.path.write_text(json.dumps({**dead, "host": "node-17"}))
    with pytest.raises(StoreBusy, match=r"by pid \d+ on node-17 \(since x\); if that run is gone"):
        lock.acquire()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    lock = StoreLock(tmp_path / "s.zarr").acquire()
    other = {**_holder(lock), "token": "someone else's"}
    lock.path.write_text(json.dumps(other))  # e.g. broken as stale and retaken elsewhere
    lock.release()
    assert _holder(lock) == other


def test_a_store_has_one_writer(tmp_path):
    from test_store import ATTRS, make_batch

    rng = np.random.default_rng(0)
    writer = CellStoreWriter(tmp_path / "s", 8, ATTRS, chunk_cells=4)
    writer.add(make_batch(6, 0, rng))
    with pytest.raises(StoreBusy, match="s.zarr is being written by pid"):
        CellStoreWriter(tmp_path / "s", 8, ATTRS, chunk_cells=4, overwrite=True)
    assert writer.n_cells == 6  # the first writer's rows are untouched
    store = writer.finalize()
    assert store.n_cells == 6 and not (tmp_path / "s.zarr.lock").exists()
    dropped = CellStoreWriter(tmp_path / "t", 8, ATTRS)
    del dropped  # a writer dropped without finalize lets go of its lock
    assert not (tmp_path / "t.zarr.lock").exists()


def test_two_segment_runs_at_once_leave_one_intact_store_and_one_line(tmp_path):
    """Two processes segment the same slide into the same folder: the second says who holds it
    in one line and skips it; the first finishes a store equal to one made alone."""
    out = tmp_path / "out"
    args = ["--segmenter", "watershed", "--tile-size", "256", "--roi", "600,600,1000,1000"]
    cmd = [sys.executable, "-m", "wsi_ccrl_cli.main", "segment", str(SAMPLE_SLIDE), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([*cmd, "--out", str(out)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    lock = out / "CMU-1-Small-Region.zarr.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), first.communicate()
    second = subprocess.run([*cmd, "--out", str(out)], env=env, text=True, capture_output=True,
                            timeout=300)  # fmt: skip
    assert first.poll() is None, "the first run ended before the second one looked"
    one, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 0, second.stderr[-2000:]
    lines = [line for line in second.stderr.splitlines() if "CMU-1-Small-Region" in line]
    busy = [line for line in lines if "is being written by" in line]
    assert len(busy) == 1 and f"by pid {first.pid} on {socket.gethostname()}" in busy[0]
    assert "skipped" in busy[0] and "store:" not in second.stdout
    assert "Traceback" not in second.stderr
    store = CellStore.open(out / "CMU-1-Small-Region.zarr")
    alone = subprocess.run([*cmd, "--out", str(tmp_path / "alone")], env=env, text=True,
                           capture_output=True, timeout=600)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-2000:]
    ref = CellStore.open(tmp_path / "alone" / "CMU-1-Small-Region.zarr")
    assert store.n_cells == ref.n_cells > 100 and not lock.exists()
    for name in ("centroid", "crops", "contour_xy"):
        np.testing.assert_array_equal(store[name][:], ref[name][:])
