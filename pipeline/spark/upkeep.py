"""Upkeep of a Delta store: compaction and retention (`store compact --engine spark`).

Delta never changes a file: every run adds the files its MERGEs rewrote and keeps the ones they replaced, for
time travel. So a store that lives for months needs what every Delta table needs: its small files merged
(OPTIMIZE), the files no recent version reads removed (VACUUM with a retention), and its log checkpointed.

`compact_store` does that for every table of the store, holding the store's lock (no run is staged or rolling
forward meanwhile, and none starts). It asks the Spark server first (`OPTIMIZE` and `VACUUM ... RETAIN n HOURS`,
as Databricks and Spark with Delta Lake run them); a server that has neither (Sail 0.7 parses neither) leaves
the work to delta-rs (the `deltalake` package of the `spark` extra), which opens the same tables where this
process can reach them (a local folder, or an object store with its credentials in the environment), compacts
them, vacuums them and writes a checkpoint of their log. Rows are never changed: every version from the
retention window on reads the same rows, which the tests check against the DuckDB store.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.spark.delta import DELTA_TABLES, DeltaStore, store_label
from pipeline.spark.publish import COMMITS, LOCK, acquire, open_store, quoted, release

DEFAULT_RETAIN_HOURS = 168
"""Delta's own default retention: a week of time travel kept."""
SPARK_SQL, DELTA_RS = "spark sql", "delta-rs"


@dataclass(frozen=True)
class TableUpkeep:
    """One table before and after: data files and bytes on disk (None for a store on an object store)."""

    table: str
    files_before: int | None
    bytes_before: int | None
    files_after: int | None
    bytes_after: int | None


@dataclass(frozen=True)
class CompactResult:
    store: str
    retain_hours: int
    by: str
    """Who did the work: `spark sql` (the server's OPTIMIZE and VACUUM) or `delta-rs`."""
    tables: tuple[TableUpkeep, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "store": self.store,
            "retain_hours": self.retain_hours,
            "by": self.by,
            "tables": [asdict(t) for t in self.tables],
        }

    def render(self) -> str:
        lines = [f"compacted {self.store} by {self.by}, keeping {self.retain_hours} hours of history"]
        for t in self.tables:
            if t.files_before is None or t.bytes_before is None or t.files_after is None or t.bytes_after is None:
                lines.append(f"  {t.table}: done")
                continue
            lines.append(
                f"  {t.table}: {t.files_before} files, {_mib(t.bytes_before)} -> {t.files_after} files, "
                f"{_mib(t.bytes_after)}"
            )
        known = [t for t in self.tables if t.bytes_before is not None and t.bytes_after is not None]
        if known:
            before = sum(t.bytes_before or 0 for t in known)
            after = sum(t.bytes_after or 0 for t in known)
            lines.append(f"  in all: {_mib(before)} -> {_mib(after)} on disk")
        return "\n".join(lines)


def _files(count: int) -> str:
    return f"{count} file" + ("" if count == 1 else "s")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def compact_store(delta: DeltaStore, command_id: str, retain_hours: int = DEFAULT_RETAIN_HOURS) -> CompactResult:
    """Compact and vacuum every table of the Delta store, holding its lock (StoreBusy while a run holds it)."""
    if retain_hours < 0:
        raise StoreError(f"the retention must be 0 hours or more, not {retain_hours}")
    open_store(delta)
    acquire(delta, command_id)
    try:
        names = [name for name in (*DELTA_TABLES, COMMITS, LOCK) if delta.has(name)]
        before = {name: _on_disk(delta, name) for name in names}
        by = _upkeep(delta, names, retain_hours)
        tables = tuple(TableUpkeep(name, *before[name], *_on_disk(delta, name)) for name in names)
    finally:
        release(delta, command_id)
    return CompactResult(store_label(delta.store), retain_hours, by, tables)


def _upkeep(delta: DeltaStore, names: list[str], retain_hours: int) -> str:
    """OPTIMIZE and VACUUM on the server; where it has neither, delta-rs. Returns who did it."""
    try:
        delta.spark.sql(f"OPTIMIZE {quoted(delta, names[0])}").collect()
    except StoreError:
        raise
    except Exception as exc:  # the server has no OPTIMIZE (Sail): delta-rs does all of it
        refused = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for name in names:
            _with_delta_rs(delta, name, retain_hours, refused)
        return DELTA_RS
    for index, name in enumerate(names):
        statements = ([] if index == 0 else [f"OPTIMIZE {quoted(delta, name)}"]) + [
            f"VACUUM {quoted(delta, name)} RETAIN {int(retain_hours)} HOURS"
        ]
        for statement in statements:
            try:
                delta.spark.sql(statement).collect()
            except Exception as exc:  # e.g. Databricks' retention check refusing less than 168 hours
                raise StoreError(f"the Spark server refused {statement}: {exc}") from exc
    return SPARK_SQL


def _with_delta_rs(delta: DeltaStore, name: str, retain_hours: int, refused: str) -> None:
    try:
        from deltalake import DeltaTable
    except ImportError as exc:
        raise StoreError(
            f"the Spark server has no OPTIMIZE ({refused}), and delta-rs, which does it without one, is not "
            "installed: pip install 'loyalty-bulk[spark]'"
        ) from exc
    try:
        table = DeltaTable(delta.uri(name))
    except Exception as exc:
        raise StoreError(
            f"the Spark server has no OPTIMIZE ({refused}), and delta-rs cannot open {delta.uri(name)} from this "
            f"machine ({exc}); compact the store where its tables can be reached"
        ) from exc
    table.optimize.compact()
    table.vacuum(retention_hours=retain_hours, enforce_retention_duration=False, dry_run=False)
    table.create_checkpoint()
    table.cleanup_metadata()


def _on_disk(delta: DeltaStore, name: str) -> tuple[int | None, int | None]:
    """A local table's data files and bytes on disk (its log included in the bytes); (None, None) for a URI."""
    if "://" in delta.store:
        return None, None
    files, size = 0, 0
    for folder, _, entries in os.walk(delta.uri(name)):
        for entry in entries:
            path = Path(folder) / entry
            size += path.stat().st_size
            files += "_delta_log" not in path.parts and entry.endswith(".parquet")
    return files, size
