"""No request value ever enters SQL text: values reach DuckDB only as parameters or registered frames.

A full run with SQL-, placeholder- and quote-laden values in every text column must complete, leave
every table and column of the store as it was, keep the counts consistent, and store a valid value
verbatim. A static check keeps every piece of dynamic SQL text in pipeline/ to constant identifiers.
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl
from click.testing import CliRunner

from conftest import ORG, ROOT
from pipeline.cli import main
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.store.connect import open_store
from pipeline.store.duck import scalar
from pipeline.store.invariants import find_invariant_violations

HOSTILE = (
    "x'); DROP TABLE identifiers;--",
    "'; DELETE FROM customers; --",
    "$1",
    "?",
    "$customer_id",
    "\"quoted\" and 'single'",
    "back\\slash\\' \\\\",
    "Robert'); UPDATE cards SET customer_id = NULL; --",
    "ü'Ω\"' OR 1=1 --",
    "%s %d {} {0} :name @p",
)
"""Each is a valid wechat / unionId value (1 to 128 characters, no control character)."""

WECHAT_HOLDERS = (1002, 1003, 1011, 1012, 1014, 1015, 1016, 1017, 1020, 1023)
"""Active loyalty customers without a WECHAT identifier: each takes one hostile wechat value."""


def hostile_rows() -> list[dict[str, str]]:
    """Rows pushing every hostile value through every text column, valid where a valid row is possible."""
    rows: list[dict[str, str]] = []

    def row(**fields: str) -> None:
        rows.append({column: fields.get(column, "") for column in REQUEST_COLUMNS})

    for i, (value, customer) in enumerate(zip(HOSTILE, WECHAT_HOLDERS, strict=True)):
        row(
            row_id=value,
            customer_id=str(customer),
            source="WECHAT",
            account_id="WX-MAIN",
            action="add",
            id_type="wechat",
            id_value=value,
        )
        row(
            row_id=f"union-{i}",
            customer_id=str(customer),
            source="WECHAT",
            account_id="WX-CN2",
            action="add",
            id_type="unionId",
            id_value=value,
        )
        row(
            row_id=f"lookup-{i}",
            lookup_type="wechat",
            lookup_value=value,
            source="WECHAT",
            account_id="WX-MAIN",
            action="add",
            id_type="mobile",
            id_value=f"861390000{i:04d}",
        )
        row(
            row_id=f"lookup-miss-{i}",
            lookup_type="unionId",
            lookup_value=value,
            source="WECHAT",
            account_id="WX-MAIN",
            action="add",
            id_type="mobile",
            id_value=f"861391111{i:04d}",
        )
        row(
            row_id=f"ext-{i}",
            customer_id="1024",
            source="MOBILE_APP",
            action="add",
            id_type="externalId",
            id_value=value,
        )
        row(row_id=f"email-{i}", customer_id="1025", source="INSTORE", action="add", id_type="email", id_value=value)
        row(
            row_id=f"account-{i}",
            customer_id="1024",
            source="WECHAT",
            account_id=value,
            action="add",
            id_type="wechat",
            id_value=f"wx_acc_{i}",
        )
        row(
            row_id=f"source-{i}",
            customer_id="1024",
            source=value,
            action="add",
            id_type="email",
            id_value=f"src{i}@example.com",
        )
        row(
            row_id=f"label-{i}",
            customer_id="1029",
            source="INSTORE",
            action="add",
            id_type="cardnumber",
            id_value="GLD0000000003",
            series_id="101",
            status_label=value,
        )
        row(
            row_id=f"series-{i}",
            customer_id="1029",
            source="INSTORE",
            action="add",
            id_type="cardnumber",
            id_value="GLD0000000004",
            series_id=value,
            status_label="Active",
        )
        row(
            row_id=f"customer-{i}",
            customer_id=value,
            source="INSTORE",
            action="add",
            id_type="email",
            id_value=f"cust{i}@example.com",
        )
        row(
            row_id=f"type-{i}",
            customer_id="1024",
            source="INSTORE",
            action="add",
            id_type=value,
            id_value=f"type{i}@example.com",
        )
        row(
            row_id=f"action-{i}",
            customer_id="1024",
            source="INSTORE",
            action=value,
            id_type="email",
            id_value=f"act{i}@example.com",
        )
        row(
            row_id=f"remove-{i}",
            customer_id="1001",
            source="INSTORE",
            action="remove",
            id_type="externalId",
            id_value=value,
        )
    return rows


def write_requests(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(REQUEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def schema(store: Path) -> tuple[list[tuple], list[tuple]]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        tables = con.execute(
            "SELECT schema_name, table_name, estimated_size >= 0 FROM duckdb_tables() ORDER BY ALL"
        ).fetchall()
        columns = con.execute(
            "SELECT table_name, column_index, column_name, data_type, is_nullable FROM duckdb_columns() ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    return tables, columns


def counts(store: Path) -> dict[str, int]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return {table: scalar(con, f"SELECT count(*) FROM {table}") for table in ("customers", "identifiers", "cards")}
    finally:
        con.close()


def run_cli(store: Path, reports: Path, *files: Path, extra: tuple[str, ...] = ()):
    return CliRunner().invoke(
        main, ["run", "--store", str(store), "--config", str(ORG), "--reports", str(reports), *extra, *map(str, files)]
    )


def test_hostile_values_in_every_column_stay_data(store, tmp_path):
    header_only = write_requests(tmp_path / "empty.csv", [])
    warm_up = run_cli(store, tmp_path / "warm-up", header_only)  # creates the ledger tables a run keeps
    assert warm_up.exit_code == 0, warm_up.output
    before_schema, before_counts = schema(store), counts(store)

    requests = write_requests(tmp_path / "hostile.csv", hostile_rows())
    result = run_cli(store, tmp_path / "r", requests)
    assert result.exit_code == 1, result.output

    assert schema(store) == before_schema, "no table or column was created, dropped or altered"
    success = pl.read_csv(tmp_path / "r" / "success.csv", infer_schema=False)
    errors = pl.read_csv(tmp_path / "r" / "errors.csv", infer_schema=False)
    assert success.height + errors.height == len(hostile_rows())
    added = success.filter(
        (pl.col("outcome") == "applied") & (pl.col("action") == "add") & (pl.col("id_type") != "cardnumber")
    ).height
    removed = success.filter((pl.col("action") == "remove") & (pl.col("id_type") != "cardnumber")).height
    after_counts = counts(store)
    assert after_counts == {
        "customers": before_counts["customers"],
        "cards": before_counts["cards"],
        "identifiers": before_counts["identifiers"] + added - removed,
    }
    assert added >= 2 * len(HOSTILE), "every hostile wechat and unionId add applied"

    with open_store(store, read_only=True) as con:
        assert find_invariant_violations(con).height == 0
        stored = dict(
            con.execute(
                "SELECT customer_id, id_value FROM identifiers WHERE id_type = 'wechat' "
                "AND account_id = 'WX-MAIN' AND customer_id IN (SELECT unnest($ids))",
                {"ids": list(WECHAT_HOLDERS)},
            ).fetchall()
        )
    assert stored == dict(zip(WECHAT_HOLDERS, HOSTILE, strict=True)), "wechat values are stored verbatim"

    codes = dict(zip(errors["row_id"].to_list(), errors["error_code"].to_list(), strict=True))
    resolved = dict(zip(success["row_id"].to_list(), success["resolved_customer_id"].to_list(), strict=True))
    for i, holder in enumerate(WECHAT_HOLDERS):
        assert resolved[f"lookup-{i}"] == str(holder), "a lookup by the hostile value finds the row that added it"
        assert codes[f"lookup-miss-{i}"] == "8015" and codes[f"account-{i}"] == "8127"
        assert codes[f"source-{i}"] == "8003" and codes[f"label-{i}"] == "8086"
        assert codes[f"series-{i}"] == "3004" and codes[f"customer-{i}"] == "7001"
        assert codes[f"type-{i}"] == "7004" and codes[f"action-{i}"] == "7002"
        assert codes[f"remove-{i}"] == "7009"


def test_a_dry_run_of_hostile_values_changes_nothing(store, tmp_path):
    requests = write_requests(tmp_path / "hostile.csv", hostile_rows())
    before = counts(store)
    result = run_cli(store, tmp_path / "r", requests, extra=("--dry-run",))
    assert result.exit_code == 1, result.output
    assert counts(store) == before


SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|COPY|DROP|ALTER|SET VARIABLE|PRAGMA|ATTACH)\b")

ALLOWED_NAMES = {
    "declaration": "a constant column type of journal.py's _ADDED_COLUMNS (its journal migration)",
    "view": "a loop over store/diff.py's SNAP_VIEWS, the constant names of a refresh's snapshot views",
    "table": "a loop over the constant table names (store.TABLES, the workspace's TEMP_TABLES, replay's chg_* tables)",
    "kind": "TABLE or VIEW, from the workspace's constant registry of temp tables",
    "column": "a column name of store.COLUMNS",
    "COLUMNS": "store's constant column lists",
    "SORT_KEYS": "store's constant export sort keys",
    "EXPORT_OPTIONS": "constant COPY options, looked up by a format checked against them",
    "fmt": "only as a key of EXPORT_OPTIONS",
    "scope_key": "a constant column list",
    "slot_key": "a constant column list",
    "SCOPE_UNIQUE_FINDINGS": "a constant query",
    "ONE_VALUE_PER_SLOT_FINDINGS": "a constant query",
    "stored_columns": "store's constant column lists of a constant table, with the constant VALUE_HASH_SQL",
    "VALUE_HASH_SQL": "store's constant expression of identifiers.value_hash",
    "value_hash": "store's expression of identifiers.value_hash, over constant column expressions",
    "VALUE_HASH_PROBE_SQL": "store's constant query of value_hash on a constant value",
    "IDENTIFIERS_DDL": "store's constant CREATE TABLE of identifiers, formatted with a constant table name",
    "delta_table": "a Delta table of the store as delta.`path`, from spark/publish.py's quoted(), which refuses a "
    "store path holding a backtick, so the path cannot leave the quotes",
    "IDENTIFIER_MATCH": "spark/publish.py's constant join condition on every identifier column",
    "match": "a constant join condition of spark/publish.py's UPSERTS",
}
"""Names that may appear inside the braces of dynamic SQL text: each is an identifier or SQL constant."""

EXCLUDED = {
    "tools/sample.py": "the synthetic data generator: its SQL is built from its own constants and integer arguments, "
    "it reads no request file and no store",
}


def dynamic_sql_sites(path: Path) -> list[tuple[int, str | None, set[str]]]:
    """Every f-string, str.format or % / + of SQL text in a module: (line, source, names interpolated)."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def names(nodes: Sequence[ast.AST]) -> set[str]:
        return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)}

    def is_sql(node: ast.AST) -> bool:
        text = (
            node.value
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            else constants.get(node.id, "")
            if isinstance(node, ast.Name)
            else ""
        )
        return bool(SQL_WORDS.search(text))

    sites: list[tuple[int, str | None, set[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if SQL_WORDS.search(text):
                parts = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
                sites.append((node.lineno, ast.get_source_segment(source, node), names(parts)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and is_sql(node.func.value)
        ):
            sites.append(
                (
                    node.lineno,
                    ast.get_source_segment(source, node),
                    names([k.value for k in node.keywords] + list(node.args)),
                )
            )
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, (ast.Mod, ast.Add))
            and (is_sql(node.left) or is_sql(node.right))
        ):
            sites.append((node.lineno, ast.get_source_segment(source, node), names([node.left, node.right])))
    # a module-level string constant is SQL text of the package itself, not a value
    return [(line, text, used - set(constants)) for line, text, used in sites]


def test_dynamic_sql_text_holds_only_constant_identifiers():
    offending = []
    checked = 0
    scanned = 0
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if str(path.relative_to(ROOT / "pipeline")) in EXCLUDED:
            continue
        scanned += 1
        for line, text, used in dynamic_sql_sites(path):
            checked += 1
            unknown = used - set(ALLOWED_NAMES)
            if unknown:
                offending.append(f"{path.name}:{line}: {sorted(unknown)} in {(text or '')[:100]!r}")
    assert not offending, "dynamic SQL text built from non-constant names:\n" + "\n".join(offending)
    assert checked >= 3, "the scan found the known dynamic SQL sites (store export, load, ledger)"
    assert scanned >= 50, f"the scan reached every subpackage of pipeline/ ({scanned} modules)"


def test_the_static_check_catches_a_value_pasted_into_sql(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(con, value):\n"
        "    con.execute(f\"SELECT * FROM identifiers WHERE id_value = '{value}'\")\n"
        "    con.execute(\"DELETE FROM cards WHERE card_number = '%s'\" % value)\n"
        '    con.execute("SELECT {v}".format(v=value))\n'
    )
    found = dynamic_sql_sites(bad)
    assert [sorted(used) for _, _, used in found] == [["value"], ["value"], ["value"]]
