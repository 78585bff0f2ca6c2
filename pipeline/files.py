"""Report writing shared by every command: spreadsheet-safe CSV, atomic files, the errors.csv rows.

Files are written to a temporary file in the target folder, fsynced, then moved over the target
with `os.replace`, so a reader never sees half a report and a crash leaves the old file or the new.
A run stages its large reports (`stage_*`: written and fsynced, not yet moved) while its transaction
is still open, and publishes them once it has committed (`publish`), or discards them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""A CSV cell starting with one of these could be run as a formula by a spreadsheet (CSV injection)."""


_STARTS_FORMULA = r"^[=+\-@\t\r]"


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix a single quote to every String cell that starts with = + - @ tab or carriage return.

    Spreadsheets show the quote-prefixed text literally instead of evaluating it (SPEC section 5).
    Only text columns change; numbers such as a negative count stay numbers. Parquet copies of
    reports keep the raw values, so only CSV writing calls this.
    """
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_STARTS_FORMULA))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )


def write_csv(frame: pl.DataFrame, path: Path | str) -> Path:
    """Write a frame as a formula-neutralised CSV with a header, atomically."""
    return publish_one(stage_csv(frame, path))


def write_parquet(frame: pl.DataFrame, path: Path | str) -> Path:
    """Write a frame as Parquet, atomically; raw values, no formula neutralising (SPEC section 5)."""
    return publish_one(stage_parquet(frame, path))


def write_lines(lines: pl.Series, path: Path | str) -> Path:
    """Write each string as one line (NDJSON), atomically; an empty series gives an empty file."""
    return publish_one(stage_lines(lines, path))


@dataclass(frozen=True)
class Staged:
    """A file written in full and fsynced under a temporary name beside `path`, not yet in place."""

    temporary: Path
    path: Path


def stage_csv(frame: pl.DataFrame, path: Path | str) -> Staged:
    safe = neutralise_formulas(frame)
    return _stage(Path(path), lambda handle: safe.write_csv(handle))


def stage_parquet(frame: pl.DataFrame, path: Path | str) -> Staged:
    return _stage(Path(path), lambda handle: frame.write_parquet(handle))


def stage_lines(lines: pl.Series | Iterable[pl.Series], path: Path | str) -> Staged:
    """Each string as one line; `lines` may come in chunks (plan.call_lines), each written before the next is made."""
    chunks = [lines] if isinstance(lines, pl.Series) else lines

    def write(handle: IO[bytes]) -> None:
        for chunk in chunks:
            chunk.to_frame("line").write_csv(handle, include_header=False, quote_style="never")

    return _stage(Path(path), write)


def publish(staged: list[Staged]) -> None:
    """Move staged files into place (each `os.replace` is atomic), then flush their folders' entries."""
    for item in staged:
        os.replace(item.temporary, item.path)
    for folder in {item.path.parent for item in staged}:
        _fsync_folder(folder)


def publish_one(staged: Staged) -> Path:
    try:
        publish([staged])
    except BaseException:
        discard([staged])
        raise
    return staged.path


def discard(staged: list[Staged]) -> None:
    """Remove staged files that will not be published."""
    for item in staged:
        item.temporary.unlink(missing_ok=True)


def json_text(obj: Any) -> str:
    """The JSON text of every document we write or print (indented, UTF-8, dates as strings)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def write_json(obj: Any, path: Path | str) -> Path:
    """Write a JSON document atomically."""
    return write_text(json_text(obj) + "\n", path)


def write_text(text: str, path: Path | str) -> Path:
    """Write UTF-8 text atomically."""
    return _write_atomic(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    return publish_one(_stage(path, write))


def _stage(path: Path, write: Callable[[IO[bytes]], object]) -> Staged:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise
    return Staged(temporary, path)


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform lets a folder be opened for this."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
