"""Checks on files before anything reads or opens them.

* :func:`check_warehouse_file`: an existing ``--warehouse`` path must be a DuckDB database
  (its header carries DuckDB's magic bytes), checked before DuckDB opens it: DuckDB would
  otherwise treat some files as an in-memory database (nothing stored, success printed) or
  write into a file that is not its own.
* :func:`inside_file`: a file read from an artifact dir or a TR122 pack is a regular file
  reached without a symbolic link, so a link cannot bring a file from outside the dir
  into the warehouse (where SQL would show it) or into an error message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agents.errors import ValidationError

# A DuckDB file starts with an 8-byte checksum, then the magic "DUCK" (storage format docs).
DUCKDB_MAGIC = b"DUCK"
DUCKDB_MAGIC_OFFSET = 8


def check_warehouse_file(path: str | os.PathLike) -> None:
    """Raise a ValidationError unless ``path`` is missing (a writer creates it) or a DuckDB file.

    Reads only the header; the file is never changed.
    """
    path = Path(path)
    if str(path) == ":memory:":
        return
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ValidationError(f"--warehouse {path}: cannot be read ({exc.strerror}); pass a warehouse file you may read") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ValidationError(f"--warehouse {path}: is a folder, not a warehouse file; pass a file path such as "
                              f"{path / 'fleet.duckdb'}")
    if not stat.S_ISREG(info.st_mode):
        raise ValidationError(f"--warehouse {path}: is not a regular file; pass a warehouse file path")
    try:
        with open(path, "rb") as f:
            head = f.read(DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC))
    except OSError as exc:
        raise ValidationError(f"--warehouse {path}: cannot be read ({exc.strerror}); pass a warehouse file you may read") from exc
    if head[DUCKDB_MAGIC_OFFSET:] != DUCKDB_MAGIC:
        what = "an empty file" if not head else f"a file of {info.st_size:,} bytes"
        raise ValidationError(
            f"--warehouse {path}: is {what} that is not a DuckDB database (no DuckDB header), so it was not opened "
            "and is unchanged; pass a .duckdb warehouse file, or a path that does not exist yet to create one"
        )


def _link_message(path: Path, root: Path) -> ValidationError:
    return ValidationError(
        f"{path}: is a symbolic link; files in {root} are read only when they are regular files inside it "
        "(a link could bring in a file from elsewhere): copy the file in place of the link"
    )


def _walk_without_links(root: Path, relative) -> tuple[Path, os.stat_result] | None:
    """(path, its lstat) of ``root / relative`` reached without a symbolic link below
    ``root``; None when a part does not exist; a link is a ValidationError."""
    path, info = root, None
    for part in Path(relative).parts:
        path = path / part
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            raise _link_message(path, root)
    if info is None:  # no parts: root itself
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
    return path, info


def inside_file(root: str | os.PathLike, relative: str | os.PathLike) -> Path | None:
    """``root / relative`` when it is a regular file reached without a symbolic link, None
    when it does not exist; a link anywhere below ``root`` (or a non-file) is a ValidationError.

    ``root`` itself may be a link: the user named it.
    """
    found = _walk_without_links(Path(root), relative)
    if found is None:
        return None
    path, info = found
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            return None
        raise ValidationError(f"{path}: is not a regular file; replace it with the file itself")
    return path


def inside_dir(root: str | os.PathLike, relative: str | os.PathLike) -> Path | None:
    """``root / relative`` when it is a folder reached without a symbolic link, else None
    (missing); a link is a ValidationError."""
    found = _walk_without_links(Path(root), relative)
    return found[0] if found is not None and stat.S_ISDIR(found[1].st_mode) else None


def check_no_links(root: str | os.PathLike, paths) -> None:
    """Raise for the first of ``paths`` (inside ``root``) that is a symbolic link."""
    root = Path(root)
    for path in paths:
        if Path(path).is_symlink():
            raise _link_message(Path(path), root)
