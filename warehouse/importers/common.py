"""Pieces the importers share: text columns to numbers, ids from file hashes, writing."""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from agents.errors import ValidationError

from ..connection import WRITER_LOCK_TIMEOUT_S
from ..ingest import with_writer, prepare_bundle, write_bundle
from ..validate import quote

# Cells a tool writes when it could not read a value: failed reads, not bad input.
_FAILED_CELL = r"^(\[.*\]|N/A|n/a|NA|nan|NaN|)$"
_NUMBER = r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$"

# The header line is read on its own, within these bounds, before the CSV reader sees the
# file: a header of millions of columns would otherwise cost gigabytes and minutes.
MAX_HEADER_BYTES = 65_536
MAX_COLUMNS = 1_024


@dataclass
class ImportedRun:
    """One imported recording in the shapes :func:`warehouse.ingest.prepare_bundle` takes."""

    label: str
    run_metadata: dict
    fingerprint: dict
    trace: pa.Table
    markers: pa.Table | None = None
    events: pa.Table | None = None
    experiments: dict[str, dict] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def file_sha256(*paths: Path | None) -> str:
    """Hex SHA-256 over the bytes of the given files (None skipped), in order."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(Path(path).read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def slug(text: str, default: str = "gpu") -> str:
    """A safe-name fragment: lower case, runs of other characters as '-'."""
    out = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return out[:60] or default


def read_text_csv(path: Path, label: str) -> tuple[list[str], pa.Table, list[int]]:
    """A CSV as (header names, all-string columns named c0.., invalid line numbers skipped).

    Cells are trimmed. A line with the wrong number of fields is skipped only when it is the
    file's last line (a log cut off mid-write); anywhere else it is a ValidationError.
    """
    if not path.is_file():
        raise ValidationError(f"{label}: file is missing; pass the path of an existing file")
    header = _header(path, label)
    total_lines = _scan(path, label)
    invalid: list[int] = []

    def on_invalid(row) -> str:
        invalid.append(row.number if row.number is not None else -1)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=[f"c{i}" for i in range(len(header))], skip_rows=1,
                                           use_threads=False),  # threads lose the line numbers of bad rows
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={f"c{i}": pa.string() for i in range(len(header))},
                strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise ValidationError(f"{label}: not a readable CSV ({_csv_error(exc)}); re-export the file") from exc
    for number in invalid:
        if number != total_lines:
            raise ValidationError(
                f"{label}: line {number} has a different number of fields than the header "
                f"({len(header)}); repair or delete that line"
            )
    table = pa.table({name: pc.utf8_trim_whitespace(table.column(name)) for name in table.column_names})
    return header, table, invalid


def _header(path: Path, label: str) -> list[str]:
    """The header's trimmed names, read from at most MAX_HEADER_BYTES of the file."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES + 1)
    if not head.strip():
        raise ValidationError(f"{label}: file is empty; pass a non-empty CSV with a header line")
    end = head.find(b"\n")
    if end < 0 and len(head) > MAX_HEADER_BYTES:
        raise ValidationError(f"{label}: header line is longer than {MAX_HEADER_BYTES:,} bytes; the first line "
                              "names the columns: re-export the file")
    line = (head if end < 0 else head[:end]).rstrip(b"\r").decode("utf-8", errors="replace")
    if line.count(",") >= MAX_COLUMNS:
        raise ValidationError(f"{label}: header line has {line.count(',') + 1:,} columns, more than {MAX_COLUMNS:,}; "
                              "the first line names the columns: re-export the file")
    return [h.strip() for h in next(csv.reader([line]))]


def _scan(path: Path, label: str) -> int:
    """The file's line count as pyarrow numbers lines (\\n, \\r or \\r\\n; trailing newlines not
    counted), checking in the same bounded pass that it is UTF-8 text.

    Checked before pyarrow reads it: pyarrow decodes a malformed row's text for the
    invalid-row handler, and a non-UTF-8 row there ends in an "Exception ignored" message.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines = returns = pairs = offset = 0
    last = tail = b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line = newlines + block.count(b"\n", 0, max(exc.start, 0)) + 1
                raise ValidationError(f"{label}: line {line} is not UTF-8 text (byte {offset + max(exc.start, 0):,}); "
                                      "re-export the file as UTF-8 text") from exc
            newlines += block.count(b"\n")
            returns += block.count(b"\r")
            pairs += (tail + block).count(b"\r\n") - tail.count(b"\r\n")
            tail, last, offset = block[-1:], block, offset + len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{label}: ends inside a UTF-8 character; re-export the file as UTF-8 text") from exc
    trailing = len(last) - len(last.rstrip(b"\n"))  # a file of only newlines has no lines
    if offset == trailing:
        return 0
    return newlines - trailing + returns - pairs + 1


def _csv_error(exc: Exception) -> str:
    """pyarrow's reason, without the row's text that it quotes (file content stays out)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    match = re.search(r"Row #(\d+): Expected (\d+) columns, got (\d+)", text)
    if match:
        return f"line {match.group(1)} has {match.group(3)} fields, the header {match.group(2)}"
    if "straddl" in text:
        return "a line is longer than the reader's 1 MiB block, which no log line is"
    return quote(text.split(": ", 2)[-1] if "Row #" in text else text, 80)


def failed_cells(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """True where a cell is a failed read: [N/A], [Unknown Error], [Not Supported], empty."""
    return pc.match_substring_regex(values, _FAILED_CELL)


def parse_numbers(label: str, column: str, values: pa.ChunkedArray, unit: str | None = None,
                  what: str = "a number") -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(float64 values with nulls for failed reads, failed-read mask) of a text column.

    A trailing unit equal to ``unit`` is accepted (nvidia-smi without ``nounits``). Any other
    text is a ValidationError naming the column, the line and the value.
    """
    failed = failed_cells(values)
    text = values
    if unit:
        text = pc.replace_substring_regex(values, pattern=r"\s*" + re.escape(unit) + "$", replacement="")
    good = pc.match_substring_regex(text, _NUMBER)
    bad = pc.and_(pc.invert(good), pc.invert(failed))
    row = pc.index(bad, pa.scalar(True)).as_py()
    if row >= 0:
        raise ValidationError(
            f"{label}: column {column} has {quote(values[row].as_py())} at line {row + 2}; expected {what}"
            f"{' in ' + unit if unit else ''} or a failed-read cell like [N/A]: fix or delete that line"
        )
    numbers = pc.if_else(failed, pa.scalar(None, pa.string()), text).cast(pa.float64())
    return numbers, failed


def write_imported(warehouse, run: ImportedRun, source: str, lock_timeout_s: float = WRITER_LOCK_TIMEOUT_S,
                   replace: bool = False) -> dict:
    """Validate an imported run like any ingest, then write it in one transaction (a run
    stored from another kind of source is replaced only with ``replace``)."""
    bundle = prepare_bundle(
        run.run_metadata, run.fingerprint, [(run.label, run.trace)], run.markers, run.events,
        run.experiments, None, source=source, labels={"dir": run.label} | run.labels,
    )
    return with_writer(warehouse, lock_timeout_s, lambda con: write_bundle(con, bundle, replace))


def basename(path: str | os.PathLike | None) -> str | None:
    """The file name only: imported metadata never records a machine's paths."""
    return None if path is None else Path(path).name
