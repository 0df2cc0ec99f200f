"""Writers first: a writer that waits for the file says so, and readers let it in.

DuckDB lets many readers share a file, and a reader cannot tell that a writer waits. So
readers whose queries overlap without a gap (dashboard viewers, a loop of `fleetphysics
sql`) could keep an ingest out until it gives up. A writer that finds the file held writes
its PID into ``<warehouse>.writer-waiting`` until it gets the file (or gives up); a reader
about to open the file, or to join the dashboard's open instance, first waits while a live
process waits to write. The readers in flight finish (each bounded by its time limit), the
file is released and the writer opens it. A marker left by a killed writer names a dead
PID and is ignored.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agents.errors import WarehouseError

SUFFIX = ".writer-waiting"
POLL_S = 0.05  # how often a reader looks whether the writer is still waiting


def marker(path: str | os.PathLike) -> Path:
    """The file a waiting writer of ``path`` keeps its PID in."""
    return Path(str(path) + SUFFIX)


def waiting_writer(path: str | os.PathLike) -> int | None:
    """The PID of a live process waiting to write ``path``, else None."""
    try:
        pid = int(marker(path).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


@contextmanager
def announced(path: str | os.PathLike) -> Iterator[None]:
    """Mark ``path`` as awaited by this process for the length of the block."""
    target = marker(path)
    try:
        target.write_text(f"{os.getpid()}\n")
    except OSError:  # a folder we cannot write in: opening the file for writing fails anyway
        yield
        return
    try:
        yield
    finally:
        try:
            if target.read_text().strip() == str(os.getpid()):
                target.unlink()
        except OSError:
            pass


def kept_out(path: str | os.PathLike, pid: int, timeout_s: float) -> WarehouseError:
    """The one-line error of a reader that waited ``timeout_s`` for writer ``pid``."""
    return WarehouseError(
        f"{path}: process {pid} waits to write the file and readers let it go first, for more than "
        f"{timeout_s:g} s so far; retry when that ingest is done, or raise the timeout (--lock-timeout-s)")


def yield_to_writers(path: str | os.PathLike, timeout_s: float) -> None:
    """Wait while a live writer waits for ``path``, up to ``timeout_s``; then kept_out()."""
    deadline = time.monotonic() + timeout_s
    while (pid := waiting_writer(path)) is not None:
        if time.monotonic() >= deadline:
            raise kept_out(path, pid, timeout_s)
        time.sleep(POLL_S)
