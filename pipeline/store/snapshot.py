"""A store made from a snapshot folder (`store init`) and written back as one (`store export`).

A store only ever comes into place whole: `init_store` stages the snapshot's tables (trimmed, normalised,
typed), loads them into a new DuckDB file beside the target, checks every invariant (invariants.py) and
renames it in only when all hold; otherwise it writes a findings report and leaves any old store as it was.
An export sorts each table by its key, so equal stores export byte for byte equal.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from pipeline.config import MobileCountries, TomlValidator
from pipeline.errors import ConfigError, SnapshotRefused, StoreError
from pipeline.files import fsync_path, write_csv
from pipeline.results import StoreCounts
from pipeline.settings import DEFAULT_MEMORY_LIMIT
from pipeline.store.connect import connect, open_store
from pipeline.store.duck import one_row, query_frame, scalar, transaction
from pipeline.store.invariants import find_invariant_violations
from pipeline.store.mobiles import MOBILE_COUNTRIES_KEY
from pipeline.store.schema import (
    COLUMNS,
    SCHEMA_SQL,
    SCHEMA_VERSION,
    SORT_KEYS,
    TABLES,
    VALUE_HASH_PROBE_KEY,
    VALUE_HASH_PROBE_SQL,
    ensure,
    store_counts,
    stored_columns,
)
from pipeline.values.normalize import normalize_expr, trim_expr

SNAPSHOT_SUFFIXES = (".parquet", ".csv", ".csv.gz")
"""The files a snapshot table may come as (exactly one per table)."""


Format = Literal["parquet", "csv"]


def snapshot_file(snapshot_dir: Path, table: str) -> Path:
    found = [
        snapshot_dir / f"{table}{suffix}"
        for suffix in SNAPSHOT_SUFFIXES
        if (snapshot_dir / f"{table}{suffix}").is_file()
    ]
    if not found:
        raise StoreError(
            f"snapshot {snapshot_dir}: no {table} file ({', '.join(table + s for s in SNAPSHOT_SUFFIXES)});"
            " no store was written"
        )
    if len(found) > 1:
        raise StoreError(
            f"snapshot {snapshot_dir}: several {table} files ({', '.join(p.name for p in found)});"
            " keep one; no store was written"
        )
    return found[0]


def _scan(path: Path) -> pl.LazyFrame:
    try:
        # every CSV field is text: '0001' must not silently become 1 before we cast it ourselves
        lf = pl.scan_parquet(path) if path.name.endswith(".parquet") else pl.scan_csv(path, infer_schema=False)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise StoreError(f"{path}: cannot be read as {_kind(path)}: {exc}; no store was written") from exc
    return lf


def _kind(path: Path) -> str:
    return "Parquet" if path.name.endswith(".parquet") else "CSV"


def _prepared(table: str, path: Path, lf: pl.LazyFrame, countries: MobileCountries | None = None) -> pl.LazyFrame:
    """Trim, normalise and type one snapshot table; `_bad_<col>` keeps values that are not integers.

    With `[mobile]` countries, mobiles stay as trimmed here: `_read_staged_mobiles` reads them once
    staged, one distinct value at a time.
    """
    schema = lf.collect_schema()
    names = schema.names()
    expected = COLUMNS[table]
    unknown = [c for c in names if c not in expected]
    missing = [c for c in expected if c not in names]
    if unknown:
        raise StoreError(
            f"{path}: unknown column '{unknown[0]}' (expected {', '.join(expected)}); no store was written"
        )
    if missing:
        raise StoreError(
            f"{path}: missing column '{missing[0]}' (expected {', '.join(expected)}); no store was written"
        )
    # integers stay as they are; anything else is read as text first so that it can be trimmed
    as_text = [
        pl.col(c).cast(pl.String)
        for c in expected
        if schema[c] != pl.String() and not (expected[c].is_integer() and schema[c].is_integer())
    ]
    lf = lf.with_columns(as_text)
    exprs: list[pl.Expr] = []
    checks: list[pl.Expr] = []
    for column, dtype in expected.items():
        if not dtype.is_integer():
            exprs.append(trim_expr(column))
        elif schema[column] == dtype:
            exprs.append(pl.col(column))
        else:
            raw = pl.col(column) if schema[column].is_integer() else _blank_as_null(trim_expr(column))
            typed = raw.cast(dtype, strict=False)
            exprs.append(typed.alias(column))
            checks.append(
                pl.when(raw.is_not_null() & typed.is_null()).then(raw.cast(pl.String)).alias(f"_bad_{column}")
            )
    # an empty required text is missing (reported as not_null); a missing account_id is '' (single-account)
    blanks = [
        _blank_as_null(pl.col(c)).alias(c) for c, t in expected.items() if not t.is_integer() and c != "account_id"
    ]
    prepared = lf.select(exprs + checks).with_columns(blanks)
    if table == "identifiers":
        normalised = normalize_expr(pl.col("id_type"), pl.col("id_value"))
        if countries is not None:
            normalised = pl.when(pl.col("id_type") == "mobile").then(pl.col("id_value")).otherwise(normalised)
        prepared = prepared.with_columns(id_value=normalised)
    return prepared


def _blank_as_null(text: pl.Expr) -> pl.Expr:
    """'' as null. Not `replace("", None)`: on the 25M identifiers of the bench's snapshot that took the streaming
    sink from 0.5 to 2.3 GiB of peak memory (bench/RESULTS.md, Refresh); this when/then streams."""
    return pl.when(text == "").then(None).otherwise(text)


BAD_VALUE_SQL = "SELECT count({col}), min({col}) FROM read_parquet($1)"
MASKED_SQL = "SELECT count(*), min({col}) FROM read_parquet($1) WHERE regexp_matches({col}, '\\*{{3,}}')"
MASKED_COLUMNS = {"identifiers": "id_value", "cards": "card_number"}
"""Where a masked value (three asterisks or more: the platform masks PII so outside its restricted tables) would
load a value that matches nothing: refused."""


@dataclass(frozen=True)
class TableLayout:
    """How one table of a platform export maps onto a snapshot table: its file, its columns, fixed values."""

    file: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    """snapshot column -> the export's column."""
    fixed: dict[str, str] = field(default_factory=dict)
    """snapshot column -> the value every row gets."""


SnapshotLayout = dict[str, TableLayout]
"""A snapshot layout file, per table; a table it does not name is read as the snapshot layout has it."""


def load_snapshot_layout(path: Path | str) -> SnapshotLayout:
    """Read a snapshot layout file (TOML: [customers], [identifiers], [cards], each with `file`, `[.columns]`,
    `[.fixed]`); a wrong key is a ConfigError naming it (exit 2)."""
    v = TomlValidator(str(path))
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "(file)", f"cannot be read as TOML: {exc}") from exc
    v.known_keys(raw, "", set(TABLES))
    layout: SnapshotLayout = {}
    for table in (t for t in TABLES if t in raw):
        body = v.table(raw, table, required=True)
        v.known_keys(body, f"{table}.", {"file", "columns", "fixed"})
        columns = v.table(body, "columns", required=False)
        fixed = v.table(body, "fixed", required=False)
        for kind, mapping in (("columns", columns), ("fixed", fixed)):
            v.known_keys(mapping, f"{table}.{kind}.", set(COLUMNS[table]))
            for key, value in mapping.items():
                if not isinstance(value, str):
                    v.fail(f"{table}.{kind}.{key}", f"must be a string, got {value!r}")
        both = set(columns) & set(fixed)
        if both:
            v.fail(f"{table}.fixed.{sorted(both)[0]}", "is mapped in columns too; give one")
        layout[table] = TableLayout(v.value(body, f"{table}.file", str, None), dict(columns), dict(fixed))
    return layout


def _mapped(table: str, path: Path, lf: pl.LazyFrame, layout: TableLayout) -> pl.LazyFrame:
    """The export's columns under the snapshot's names, with the fixed values; other columns are left out."""
    names = lf.collect_schema().names()
    exprs = []
    for column in COLUMNS[table]:
        if column in layout.fixed:
            exprs.append(pl.lit(layout.fixed[column], dtype=pl.String).alias(column))
            continue
        source = layout.columns.get(column, column)
        if source not in names:
            how = f"the layout maps '{column}' to '{source}'" if column in layout.columns else f"'{column}' is needed"
            raise StoreError(f"{path}: no column '{source}' ({how}; columns: {', '.join(names)}); nothing was written")
        exprs.append(pl.col(source).alias(column))
    return lf.select(exprs)


def source_file(snapshot_dir: Path, table: str, layout: SnapshotLayout | None = None) -> Path:
    """The file a snapshot table is read from: the layout's, or the one file named after the table."""
    return _source(snapshot_dir, table, (layout or {}).get(table))


def _source(snapshot_dir: Path, table: str, layout: TableLayout | None) -> Path:
    if layout is None or layout.file is None:
        return snapshot_file(snapshot_dir, table)
    path = snapshot_dir / layout.file
    if not path.is_file():
        raise StoreError(f"snapshot {snapshot_dir}: no {table} file {layout.file} (the layout's); nothing was written")
    return path


def stage_snapshot(
    snapshot_dir: Path,
    work_dir: Path,
    countries: MobileCountries | None = None,
    layout: SnapshotLayout | None = None,
) -> dict[str, Path]:
    """Write each snapshot table, trimmed, normalised and typed, as Parquet under work_dir; with a layout, from a
    platform export's files and columns."""
    layout = layout or {}
    sources = {table: _source(snapshot_dir, table, layout.get(table)) for table in TABLES}
    scans = {
        table: _mapped(table, path, _scan(path), layout[table]) if table in layout else _scan(path)
        for table, path in sources.items()
    }
    frames = {table: _prepared(table, sources[table], lf, countries) for table, lf in scans.items()}
    staged: dict[str, Path] = {}
    con = duckdb.connect(config={"memory_limit": DEFAULT_MEMORY_LIMIT, "temp_directory": str(work_dir / "spill")})
    try:
        for table, lf in frames.items():
            target = work_dir / f"{table}.parquet"
            try:
                lf.sink_parquet(target, compression="lz4")
            except pl.exceptions.PolarsError as exc:
                raise StoreError(
                    f"{sources[table]}: cannot be read as {_kind(sources[table])}: {exc}; no store was written"
                ) from exc
            for column in (c for c in lf.collect_schema().names() if c.startswith("_bad_")):
                count, example = one_row(con, BAD_VALUE_SQL.format(col=column), [str(target)])
                if count:
                    raise StoreError(
                        f"{sources[table]}: column '{column[5:]}': {count} value(s) are not integers"
                        f" of the column's range, e.g. '{example}'; no store was written"
                    )
            if table in MASKED_COLUMNS:
                column = MASKED_COLUMNS[table]
                count, example = one_row(con, MASKED_SQL.format(col=column), [str(target)])
                if count:
                    raise StoreError(
                        f"{sources[table]}: column '{column}': {count} masked value(s), e.g. '{example}': a masked"
                        " value matches no request and no other value; export the unmasked values (the platform"
                        " masks PII outside its restricted tables); nothing was written"
                    )
            if table == "identifiers" and countries is not None:
                _read_staged_mobiles(con.cursor(), target, work_dir, countries)
            staged[table] = target
    finally:
        con.close()
    return staged


STAGED_MOBILES_SQL = "SELECT DISTINCT id_value FROM read_parquet($1) WHERE id_type = 'mobile'"


def _read_staged_mobiles(
    con: duckdb.DuckDBPyConnection, staged: Path, work_dir: Path, countries: MobileCountries
) -> None:
    """Read the staged identifiers' mobiles with the countries, before the load (no UPDATE after it).

    The staged file is written again only when some value changes: a snapshot already stored in the
    E.164 form of its countries costs one distinct scan and the reading of its distinct values.
    """
    from pipeline.values.mobile import normalised_mobiles

    values = query_frame(con, STAGED_MOBILES_SQL, [str(staged)]).get_column("id_value")
    table = normalised_mobiles(values.cast(pl.String), countries, distinct=True)
    changes = table.filter(pl.col("normalised") != pl.col("value"))
    if changes.is_empty():
        return
    is_mobile = pl.col("id_type") == "mobile"
    read = pl.col("id_value").replace(changes.get_column("value"), changes.get_column("normalised"))
    rewritten = work_dir / f".{staged.name}"
    pl.scan_parquet(staged).with_columns(
        id_value=pl.when(is_mobile).then(read).otherwise(pl.col("id_value"))
    ).sink_parquet(rewritten, compression="lz4")
    os.replace(rewritten, staged)


LOAD_SQL = "INSERT INTO {table} SELECT {columns} FROM read_parquet($1)"
"""`columns`: stored_columns(table)."""


META_SQL = "INSERT INTO store_meta VALUES ($1, $2)"


def findings_on_staged(staged: dict[str, Path], work_dir: Path) -> pl.DataFrame:
    """Run the invariant check on the staged Parquet files (used when they cannot even be loaded)."""
    con = duckdb.connect(config={"memory_limit": DEFAULT_MEMORY_LIMIT, "temp_directory": str(work_dir / "spill")})
    try:
        for table, path in staged.items():
            con.read_parquet(str(path)).select(*COLUMNS[table]).to_view(table)
        return find_invariant_violations(con)
    finally:
        con.close()


def init_store(
    store_path: Path | str,
    snapshot_dir: Path | str,
    report_path: Path | str | None = None,
    force: bool = False,
    countries: MobileCountries | None = None,
    layout: SnapshotLayout | None = None,
) -> StoreCounts:
    """Make a store from a snapshot folder; refuse (SnapshotRefused, with a findings report) one that
    breaks an invariant. The store appears only when complete and valid.

    With `[mobile]` countries (`store init --config`), mobiles are read with them, and the store
    records which countries its mobiles were read with. A layout (`--layout`) reads a platform export's files and
    columns as the snapshot's tables.
    """
    store_path, snapshot_dir = Path(store_path), Path(snapshot_dir)
    report = Path(report_path) if report_path is not None else Path(f"{store_path}.init-report.csv")
    if store_path.exists() and not force:
        raise StoreError(f"a store already exists at {store_path}; use --force to replace it; nothing was done")
    if store_path.is_dir():
        raise StoreError(f"{store_path} is a folder, not a store file; nothing was done")
    if not snapshot_dir.is_dir():
        raise StoreError(f"no snapshot folder at {snapshot_dir}; no store was written")
    store_path.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{store_path.name}.init-", dir=store_path.parent))
    try:
        staged = stage_snapshot(snapshot_dir, work_dir, countries, layout)
        new_store = work_dir / "store.duckdb"
        con = connect(new_store, False, work_dir / "spill")
        try:
            con.execute(SCHEMA_SQL)
            try:
                with_nulls = False
                with transaction(con):
                    for table in TABLES:
                        con.execute(LOAD_SQL.format(table=table, columns=stored_columns(table)), [str(staged[table])])
                    if countries is not None:  # read in the staging pass (_read_staged_mobiles)
                        con.execute(META_SQL, [MOBILE_COUNTRIES_KEY, countries.key])
            except duckdb.ConstraintException:
                with_nulls = True
            findings = None if with_nulls else find_invariant_violations(con)
            if findings is not None and findings.is_empty():
                for key, value in (
                    ("schema_version", SCHEMA_VERSION),
                    ("created_at", datetime.now(UTC).isoformat(timespec="seconds")),
                    ("snapshot", str(snapshot_dir.resolve())),
                    (VALUE_HASH_PROBE_KEY, scalar(con, VALUE_HASH_PROBE_SQL)),
                ):
                    con.execute(META_SQL, [key, value])
                if countries is None:
                    con.execute(META_SQL, [MOBILE_COUNTRIES_KEY, ""])
                counts = store_counts(con)
                con.execute("CHECKPOINT")
                # The parallel load leaves part-filled row groups, which DuckDB compacts at the next
                # checkpoint that rewrites the catalog. Making the ledger tables here takes that cost
                # (≈0.7 s on 25M identifiers) instead of the first run's COMMIT.
                ensure(con)
                con.execute("CHECKPOINT")
        finally:
            con.close()
        if findings is None:
            findings = findings_on_staged(staged, work_dir)
        if not findings.is_empty():
            write_csv(findings, report)
            raise SnapshotRefused(snapshot_dir, findings.height, report)
        fsync_path(new_store)
        _check_not_busy(store_path)
        wal = Path(f"{store_path}.wal")
        if wal.exists():  # a WAL left by the replaced store would be replayed onto the new file
            wal.unlink()
        os.replace(new_store, store_path)
        fsync_path(store_path.parent)
        return counts
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _check_not_busy(store_path: Path) -> None:
    """Refuse to replace a store another process has open (DuckDB holds a file lock)."""
    if not store_path.exists():
        return
    try:
        duckdb.connect(str(store_path), read_only=True).close()
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreError(f"store {store_path} is busy (opened by another process); no store was written") from exc
    except duckdb.Error:
        pass  # not a DuckDB file: replacing it is what --force asked for


EXPORT_SQL = "COPY (SELECT {columns} FROM {table} ORDER BY {keys}) TO $1 ({options})"


EXPORT_OPTIONS = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER true"}


def export_store(store_path: Path | str, out_dir: Path | str, fmt: Format = "parquet") -> StoreCounts:
    """Write the store as a snapshot folder, each table sorted by its key so exports are reproducible."""
    if fmt not in EXPORT_OPTIONS:
        raise StoreError(f"unknown export format '{fmt}' (parquet or csv); nothing was written")
    out_dir = Path(out_dir)
    suffix = f".{fmt}"
    clashes = [
        out_dir / f"{t}{s}" for t in TABLES for s in SNAPSHOT_SUFFIXES if s != suffix and (out_dir / f"{t}{s}").exists()
    ]
    if clashes:
        raise StoreError(
            f"{out_dir} already holds {', '.join(p.name for p in clashes)} in another format;"
            " an export there would make the snapshot ambiguous; nothing was written"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    con = open_store(store_path, read_only=True)
    try:
        for table in TABLES:
            target = out_dir / f"{table}{suffix}"
            tmp = out_dir / f".{table}{suffix}.tmp"
            sql = EXPORT_SQL.format(
                columns=", ".join(COLUMNS[table]),
                table=table,
                keys=", ".join(SORT_KEYS[table]),
                options=EXPORT_OPTIONS[fmt],
            )
            con.execute(sql, [str(tmp)])
            fsync_path(tmp)
            os.replace(tmp, target)
        counts = store_counts(con)
    finally:
        con.close()
    return counts
