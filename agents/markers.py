"""Phase and event markers on the host's monotonic clock, from any process of the host.

Markers are appended as JSON lines to one file per host run (an O_APPEND write of one
line is atomic, so several processes can mark at once). The poller tails the same file:
``load`` markers drive simulated devices, so the recorded markers are exactly the load
timeline that produced the trace.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa

from agents.trace_schema import MARKER_SCHEMA

LOAD = "load"  # attrs: level (0..1), vram_mib (optional)


class MarkerWriter:
    """Appends markers to a host's marker file. Safe to use from several processes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def mark(self, name: str, device_uuid: str | None = None, t_ns: int | None = None, **attrs) -> int:
        """Record marker ``name`` now (or at ``t_ns``); returns its t_ns."""
        t = time.monotonic_ns() if t_ns is None else int(t_ns)
        line = json.dumps(
            {"t_ns": t, "wall_ns": time.time_ns(), "device_uuid": device_uuid, "name": name, "attrs": attrs},
            sort_keys=True,
            default=str,
        )
        os.write(self._fd, (line + "\n").encode())
        return t

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __getstate__(self) -> dict:  # picklable: reopen in the other process
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


class MarkerTail:
    """Reads markers appended since the last call (keeps a byte offset)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fh = None
        self._partial = b""
        self._next_open_try = 0.0

    def read_new(self) -> list[dict]:
        """Markers written since the previous call, in file order.

        The file stays open between calls (reopening it each poller tick costs more than
        reading it).
        """
        if self._fh is None:
            now = time.monotonic()
            if now < self._next_open_try:
                return []
            try:
                self._fh = open(self.path, "rb")
            except FileNotFoundError:
                self._next_open_try = now + 0.1  # not yet created: look again in 100 ms
                return []
        chunk = self._fh.read()
        if not chunk:
            return []
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next call
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line from a killed writer is not a marker
        return out


    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_markers(path: str | os.PathLike) -> list[dict]:
    """All markers of a marker file."""
    tail = MarkerTail(path)
    try:
        return tail.read_new()
    finally:
        tail.close()


def markers_table(markers: list[dict], device_uuid: str | None = None) -> pa.Table:
    """Markers as an Arrow table (MARKER_SCHEMA), sorted by t_ns.

    With ``device_uuid``, keeps that device's markers and the host-wide ones (no device).
    """
    rows = [m for m in markers if device_uuid is None or m.get("device_uuid") in (None, device_uuid)]
    rows.sort(key=lambda m: m["t_ns"])
    return pa.table(
        {
            "t_ns": [int(m["t_ns"]) for m in rows],
            "wall_ns": [int(m.get("wall_ns") or 0) for m in rows],
            "device_uuid": [m.get("device_uuid") for m in rows],
            "name": [str(m["name"]) for m in rows],
            "attrs_json": [json.dumps(m.get("attrs") or {}, sort_keys=True) for m in rows],
        },
        schema=MARKER_SCHEMA,
    )
