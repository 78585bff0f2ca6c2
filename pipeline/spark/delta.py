"""The store as Delta tables, read and written through Spark Connect.

STORE is a folder or URI; each table of the DuckDB store (store/schema.py) is a Delta table under it, at
`STORE/<table>`: store_meta, customers, identifiers, cards, the ledger (runs, run_files), the undo log (undo_*),
provenance and pushes. identifiers has no value_hash column: that 8-byte hash is DuckDB's way to find holders
fast, and a Delta store's joins run on Spark. store_meta is written last by `store init`: a folder without it
is not a store (an init that died half-way left no store), and it says `engine = spark`.

What runs where (part 1 of the Spark engine, docs/spark.md):
- `init_delta_store` reads, stages and checks the snapshot on the driver with the same code as the DuckDB
  store's init (store/snapshot.py: the same invariant checks, the same refusal report), then writes the
  tables to Delta through Spark in Arrow batches.
- `local_store` brings tables of a Delta store (whole or restricted to some customers and cards) into a
  DuckDB store file on the driver, in the store's own schema: `store export` and `store audit` read it with
  the DuckDB store's code, so their files are the same bytes as for a DuckDB store holding the same rows; a
  run's file holds none of them (`tables` empty: its batch is decided on the executors, spark/decide.py), only
  the store's meta and ledger.
- `counts` counts the whole store on Spark.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from pipeline.config import MobileCountries
from pipeline.errors import StoreError
from pipeline.results import StoreCounts
from pipeline.store.schema import (
    COLUMNS,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    TABLES,
    VALUE_HASH_PROBE_KEY,
    VALUE_HASH_PROBE_SQL,
    ensure,
    stored_columns,
)
from pipeline.store.snapshot import SnapshotLayout, init_store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

META = "store_meta"
RECORD_TABLES = (
    "runs",
    "run_files",
    "undo_identifiers",
    "undo_cards",
    "undo_customers",
    "undo_customer_rows",
    "undo_card_rows",
    "provenance",
    "pushes",
)
"""The store's record of itself: the ledger, the undo log, provenance and pushes (store/schema.py's DDL)."""
DELTA_TABLES = (*TABLES, *RECORD_TABLES, META)
"""Every table of a Delta store, in the order `store init` writes them (store_meta last: the commit point)."""
ENGINE_KEY = "engine"
BATCH_ROWS = 1_000_000
"""Rows per Arrow batch sent to Spark: Spark Connect sends a DataFrame made on the client as one message."""


def table_uri(store: str, table: str) -> str:
    """Where a table of the store lives: `STORE/<table>` (a local folder is made absolute: the server reads it)."""
    if "://" in store:
        return f"{store.rstrip('/')}/{table}"
    return str(Path(store).resolve() / table)


def store_label(store: str) -> str:
    """The store as reports name it: a URI as given, a local folder absolute."""
    return store if "://" in store else str(Path(store).resolve())


class DeltaStore:
    """A Delta store reached through a Spark session."""

    def __init__(self, spark: SparkSession, store: str) -> None:
        self.spark = spark
        self.store = store

    def uri(self, table: str) -> str:
        return table_uri(self.store, table)

    def has(self, table: str) -> bool:
        """Whether the store has this Delta table."""
        if "://" not in self.store:
            return (Path(self.uri(table)) / "_delta_log").is_dir()
        try:
            self.read(table).limit(0).collect()
        except Exception:
            return False
        return True

    def read(self, table: str) -> DataFrame:
        return self.spark.read.format("delta").load(self.uri(table))

    def exists(self) -> bool:
        """Whether the store's store_meta exists (the last table `store init` writes)."""
        return self.has(META)

    def require(self) -> None:
        if not self.exists():
            raise StoreError(
                f"no store at {self.store}; make one with 'loyalty-bulk store init --engine spark'"
                " (a folder of Delta tables)"
            )
        meta = self.meta()
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{self.store} is not a loyalty-bulk store of schema_version {SCHEMA_VERSION} "
                f"(found {meta.get('schema_version')!r})"
            )

    def meta(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self.read(META).collect()}

    def arrow(self, table: str) -> pa.Table:
        return self.read(table).toArrow()

    def counts(self) -> StoreCounts:
        """The store's counts (customers, active, merged, identifiers, cards, linked), on Spark."""
        views = {name: self.read(name) for name in TABLES}
        customers = views["customers"].selectExpr(
            "count(*) AS n", "count_if(status = 'ACTIVE') AS active", "count_if(status = 'MERGED') AS merged"
        )
        [c] = customers.collect()
        [i] = views["identifiers"].selectExpr("count(*) AS n").collect()
        [k] = views["cards"].selectExpr("count(*) AS n", "count(customer_id) AS linked").collect()
        return StoreCounts(int(c["n"]), int(c["active"]), int(c["merged"]), int(i["n"]), int(k["n"]), int(k["linked"]))

    def frame(self, data: pa.Table) -> DataFrame:
        """An Arrow table as a Spark DataFrame, with its schema given (an empty table's cannot be inferred)."""
        data = plain(data)
        return self.spark.createDataFrame(data, schema=spark_ddl(data.schema))

    def view(self, name: str, data: pa.Table) -> None:
        """An Arrow table as the session's temp view `name` (the source of a MERGE)."""
        self.frame(data).createOrReplaceTempView(name)

    def write(self, table: str, data: pa.Table, mode: str = "overwrite", batch_rows: int = BATCH_ROWS) -> None:
        """Write an Arrow table as the Delta table `table` (overwrite or append), in batches of `batch_rows`."""
        for index, part in enumerate(list(_slices(data, batch_rows)) or [data]):
            self.frame(part).write.format("delta").mode(mode if index == 0 else "append").save(self.uri(table))


_SPARK_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INT",
    pa.int16(): "SMALLINT",
    pa.int8(): "TINYINT",
    pa.string(): "STRING",
    pa.bool_(): "BOOLEAN",
    pa.float64(): "DOUBLE",
}


def spark_ddl(schema: pa.Schema) -> str:
    """A Spark schema (DDL) for an Arrow schema of the store's types (an empty table's schema cannot be inferred)."""
    try:
        return ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in schema)
    except KeyError as exc:
        raise StoreError(f"a store column of Arrow type {exc} has no Spark type here") from exc


def _slices(data: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, data.num_rows, size):
        yield data.slice(start, size)


def init_delta_store(
    spark: SparkSession,
    store: str,
    snapshot_dir: Path | str,
    report_path: Path | str | None = None,
    force: bool = False,
    countries: MobileCountries | None = None,
    layout: SnapshotLayout | None = None,
    bind: Callable[[Path], str] | None = None,
) -> tuple[StoreCounts, str | None]:
    """Make a Delta store from a snapshot folder: staged and checked as the DuckDB store's init does (a snapshot
    breaking an invariant is refused with the same report, and nothing is written), then every table written to
    Delta, store_meta last. `bind` binds the store to an org config first (store/binding.py's set_config on the
    store file made on the driver), and what it says is returned beside the counts."""
    delta = DeltaStore(spark, store)
    if delta.exists() and not force:
        raise StoreError(f"a store already exists at {store}; use --force to replace it; nothing was done")
    report = report_path if report_path is not None else _default_report(store)
    with tempfile.TemporaryDirectory(prefix="loyalty-bulk-init-") as work:
        local = Path(work) / "store.duckdb"
        counts = init_store(local, snapshot_dir, report, countries=countries, layout=layout)
        bound = bind(local) if bind is not None else None
        write_tables(delta, local)
    return counts, bound


def write_tables(delta: DeltaStore, local: Path, under: str = "") -> None:
    """Write every table of a DuckDB store file as the Delta store keeps it (DELTA_TABLES, in order: store_meta last,
    marked `engine = spark`; the snapshot tables' own columns, without DuckDB's value_hash), each at `under` + its
    name: the store's own tables, or a folder staging them."""
    with duckdb.connect(str(local), read_only=True) as con:
        for table in DELTA_TABLES:
            data = con.sql(f"SELECT * FROM {table}").to_arrow_table()
            if table in COLUMNS:
                data = data.select(list(COLUMNS[table]))
            if table == META:
                data = with_engine(data)
            delta.write(f"{under}{table}", data)


def _default_report(store: str) -> Path:
    if "://" in store:
        return Path(f"{store.rstrip('/').rsplit('/', 1)[-1]}.init-report.csv")
    return Path(f"{Path(store).resolve()}.init-report.csv")


def with_engine(meta: pa.Table) -> pa.Table:
    keys = meta.column("key").to_pylist()
    values = meta.column("value").to_pylist()
    rows = [(k, v) for k, v in zip(keys, values, strict=True) if k != ENGINE_KEY] + [(ENGINE_KEY, "spark")]
    return pa.table({"key": [k for k, _ in rows], "value": [v for _, v in rows]}, schema=meta.schema)


def plain(data: pa.Table) -> pa.Table:
    """Arrow types Spark takes: large strings as strings, unsigned integers as signed ones."""
    fields = []
    for field in data.schema:
        kind = field.type
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            kind = pa.string()
        elif pa.types.is_unsigned_integer(kind):
            kind = pa.int64()
        fields.append(pa.field(field.name, kind, nullable=True))
    return data.cast(pa.schema(fields))


@contextmanager
def local_store(
    delta: DeltaStore,
    tables: dict[str, pa.Table] | None = None,
    record_tables: Iterable[str] = ("runs", "run_files"),
) -> Iterator[Path]:
    """A DuckDB store file on the driver holding the Delta store's rows: every row of customers, identifiers and
    cards, or those of `tables` (a part of them, or none); store_meta, and of the store's
    record the `record_tables` (the ledger by default, which a run reads). Removed when the block ends."""
    delta.require()
    with tempfile.TemporaryDirectory(prefix="loyalty-bulk-spark-") as work:
        path = Path(work) / "store.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute(SCHEMA_SQL)
            ensure(con)
            for table in TABLES:
                data = tables[table] if tables is not None else delta.arrow(table)
                con.register("delta_rows", data)
                con.execute(f"INSERT INTO {table} SELECT {stored_columns(table)} FROM delta_rows")
                con.unregister("delta_rows")
            for table in record_tables:
                data = delta.arrow(table)
                if data.num_rows:
                    con.register("delta_rows", data)
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM delta_rows")
                    con.unregister("delta_rows")
            meta = delta.meta()
            # the hash this DuckDB gives: the file's value_hash column was computed by it just now
            meta[VALUE_HASH_PROBE_KEY] = str(con.execute(VALUE_HASH_PROBE_SQL).fetchall()[0][0])
            meta.pop(ENGINE_KEY, None)
            con.executemany("INSERT INTO store_meta VALUES (?, ?)", list(meta.items()))
            con.execute("CHECKPOINT")
        yield path


def append_rows(delta: DeltaStore, table: str, rows: pa.Table) -> None:
    """Append rows to a Delta table of the store (one Delta commit)."""
    if rows.num_rows:
        delta.write(table, rows, mode="append")
