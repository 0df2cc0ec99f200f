"""Opening the warehouse file: one writer at a time, read-only readers, lock retries.

DuckDB lets one process open a file read-write, or many processes open it read-only, and
a reader cannot open while a writer holds the file. So a writer holds the file only for
the length of one ingest, and both sides retry with backoff while the other holds it,
then fail with one line that says who holds it.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from agents.errors import ConfigError, WarehouseError, first_line

from . import migrations, writer_waiting
from .file_checks import check_warehouse_file

DEFAULT_WAREHOUSE = "fleet.duckdb"
ENV_WAREHOUSE = "FLEETPHYSICS_WAREHOUSE"
WRITER_LOCK_TIMEOUT_S = 60.0
READER_LOCK_TIMEOUT_S = 15.0

# Settings of every read-only connection: no file system, no extensions, no temporary
# directory (DuckDB lets a query write into it even with external access off, and spilling is
# what the memory limit is there to stop); the configuration is locked right after opening
# (see connect_readonly) so SQL cannot turn them back on.
READONLY_CONFIG = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "temp_directory": "",
}
# A reader's share of a machine that also runs ingests, the poller and other readers:
# DuckDB's defaults (80 % of RAM, every core) are the whole machine. One dashboard process
# shares one DuckDB instance per file, so these bound the dashboard as a whole.
ENV_READ_MEMORY_LIMIT = "FLEETPHYSICS_READ_MEMORY_LIMIT"
ENV_READ_THREADS = "FLEETPHYSICS_READ_THREADS"
DEFAULT_READ_MEMORY_LIMIT = "1GB"
DEFAULT_READ_THREADS = 2
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)

# The on-disk format a writer creates new warehouse files in. DuckDB 2.0 writes its newest
# format by default, which every DuckDB 1.x client (the 1.4 LTS CLI, JDBC in DBeaver, ...)
# refuses to open ("database file with version number 999"). This one opens in DuckDB 1.1
# and newer (1.1.3, 1.4.5 and 2.0.1 checked); ingest into it is as fast as into the newest.
# It only applies when the file is created: `fleetphysics compact` rewrites an older file.
STORAGE_COMPATIBILITY = "v1.1.0"
WRITER_CONFIG = {"storage_compatibility_version": STORAGE_COMPATIBILITY}

# The oldest DuckDB this package opens a warehouse with (pyproject asks for the same). Older
# ones break on the schema itself: DuckDB 1.5 cannot add a NOT NULL column (migration 002),
# 1.4 also leaks a named WINDOW from one view into the next (003), ignores USING COMPRESSION
# (006) and fails to commit some ingests (primary-key index and checkpoint errors). Reading
# the file from other clients is a different matter: see STORAGE_COMPATIBILITY.
MIN_DUCKDB = (2, 0)

_LOCK_HINTS = ("could not set lock", "conflicting lock")
_FIRST_DELAY_S = 0.02  # lock retries back off from here to 0.5 s
# Only a writer keeps a reader out; a writer is kept out by a writer or by any reader.
_WHO_HOLDS = {
    "reader": "wait for that ingest (or import, compact, fleet run) to finish and retry",
    "writer": ("a reader may hold it (the dashboard, `fleetphysics sql`, `export`, `analyze` or a DuckDB "
               "client) or another writer: let it finish (stop a dashboard query, or the dashboard) and retry"),
}
_PID = re.compile(r"PID (\d+)")


def default_warehouse() -> str:
    """The warehouse path used when --warehouse is not given (as cluster.cli has it)."""
    return os.environ.get(ENV_WAREHOUSE, DEFAULT_WAREHOUSE)


def readonly_config() -> dict:
    """READONLY_CONFIG plus the memory limit and thread count of a reader, from
    $FLEETPHYSICS_READ_MEMORY_LIMIT (default 1GB) and $FLEETPHYSICS_READ_THREADS (default 2)."""
    memory = os.environ.get(ENV_READ_MEMORY_LIMIT, "").strip() or DEFAULT_READ_MEMORY_LIMIT
    if not _SIZE.match(memory) or float(re.match(r"\s*([\d.]+)", memory).group(1)) <= 0:
        raise ConfigError(f"${ENV_READ_MEMORY_LIMIT}={memory!r}: pass a size above zero such as 512MB or 2GB "
                          f"(default {DEFAULT_READ_MEMORY_LIMIT})")
    threads_text = os.environ.get(ENV_READ_THREADS, "").strip() or str(DEFAULT_READ_THREADS)
    if not threads_text.isdigit() or not 1 <= int(threads_text) <= 1024:
        raise ConfigError(f"${ENV_READ_THREADS}={threads_text!r}: pass a whole number of threads from 1 to 1024 "
                          f"(default {DEFAULT_READ_THREADS})")
    return {**READONLY_CONFIG, "memory_limit": memory.replace(" ", ""), "threads": int(threads_text)}


def _is_lock_error(exc: Exception) -> bool:
    return isinstance(exc, duckdb.IOException) and any(h in str(exc).lower() for h in _LOCK_HINTS)


def _holder(exc: Exception) -> str:
    match = _PID.search(str(exc))
    return f"process {match.group(1)}" if match else "another process"


def require_duckdb(path: str, version: str | None = None) -> None:
    """Raise a WarehouseError naming the fix when ``version`` (default: the DuckDB this
    Python imports) is older than MIN_DUCKDB."""
    version = version or duckdb.__version__
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < MIN_DUCKDB:
        need = ".".join(map(str, MIN_DUCKDB))
        raise WarehouseError(
            f"{path}: this Python has DuckDB {version}, and the warehouse needs DuckDB {need} or newer; "
            f"run `pip install 'duckdb>={need}'` (files it writes still open in DuckDB 1.1+ clients)"
        )


def _connect_with_retry(path: str, read_only: bool, config: dict, timeout_s: float, role: str):
    require_duckdb(path)
    check_warehouse_file(path)  # before DuckDB opens it: some files it would take as in-memory
    deadline = time.monotonic() + timeout_s
    delay_s = _FIRST_DELAY_S
    with ExitStack() as waiting:  # a writer kept out says it waits, until it returns or gives up
        while True:
            if role == "reader" and (writer := writer_waiting.waiting_writer(path)) is not None:
                if time.monotonic() >= deadline:  # readers let a waiting writer in first
                    raise writer_waiting.kept_out(path, writer, timeout_s)
                time.sleep(writer_waiting.POLL_S)
                continue
            try:
                return duckdb.connect(path, read_only=read_only, config=dict(config))
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise WarehouseError(
                        f"{path}: cannot open the warehouse ({first_line(exc)}); check that it is a "
                        "fleetphysics DuckDB file and that you may read it"
                    ) from exc
                if time.monotonic() >= deadline:
                    raise WarehouseError(
                        f"{path}: held by {_holder(exc)} for more than {timeout_s:g} s, so this {role} "
                        f"could not open it; {_WHO_HOLDS[role]}, or raise the timeout (--lock-timeout-s)"
                    ) from exc
                if role == "writer" and delay_s == _FIRST_DELAY_S:
                    waiting.enter_context(writer_waiting.announced(path))
            time.sleep(min(delay_s, max(0.0, deadline - time.monotonic())))
            delay_s = min(delay_s * 2, 0.5)


def connect_writer(path: str | os.PathLike, timeout_s: float = WRITER_LOCK_TIMEOUT_S, migrate: bool = True):
    """Open (creating if needed) the warehouse read-write and bring its schema up to date.

    Retries while another process holds the file, up to ``timeout_s``. Close the connection
    as soon as the write is done: readers cannot open the file while it is held.
    """
    path = str(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = _connect_with_retry(path, False, WRITER_CONFIG, timeout_s, "writer")
    try:
        con.execute("SET enable_progress_bar = false")
        if migrate:
            migrations.migrate(con, label=path)
    except BaseException:
        con.close()
        raise
    return con


def connect_readonly(path: str | os.PathLike, timeout_s: float = READER_LOCK_TIMEOUT_S):
    """Open the warehouse read-only with file access, extensions and settings locked off.

    A missing file is a WarehouseError saying how to create one. Retries while a writer
    holds the file, up to ``timeout_s``.
    """
    path = str(path)
    if not Path(path).is_file():
        raise WarehouseError(
            f"{path}: no warehouse file here; run `fleetphysics run` or "
            "`fleetphysics ingest DIR` first, or pass --warehouse PATH"
        )
    con = _connect_with_retry(path, True, readonly_config(), timeout_s, "reader")
    try:
        try:
            con.execute("SET enable_progress_bar = false")
            con.execute("SET lock_configuration = true")
        except duckdb.Error:
            # A second reader of the same file in this process shares the first one's
            # database instance, whose configuration is already locked: that is the state
            # we want; anything else is a real error.
            if not con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]:
                raise
        migrations.check_version(con, path)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def writer(path: str | os.PathLike, timeout_s: float = WRITER_LOCK_TIMEOUT_S) -> Iterator:
    """Context manager around :func:`connect_writer` that always closes the file."""
    con = connect_writer(path, timeout_s=timeout_s)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def readonly(path: str | os.PathLike, timeout_s: float = READER_LOCK_TIMEOUT_S) -> Iterator:
    """Context manager around :func:`connect_readonly` that always closes the file."""
    con = connect_readonly(path, timeout_s=timeout_s)
    try:
        yield con
    finally:
        con.close()
