"""Wide files (a job's [wide], docs/jobs.md): one line per customer, each non-empty mapped cell one operation.

The property test writes random wide files, expands each line by hand into the long rows SPEC section 2 says it
stands for (removes, then adds and replaces, then cards, each group in [[wide.columns]] order; the lookup in its
own scope), runs the one-row-at-a-time model on that expansion and the engine on the file as read_requests reads
it, and asks for the same outcome for every operation and the same final store. The sample wide file and its
workbook twin give the same reports; an errors file of a wide run runs back; a header that does not fit the
mapping is refused naming the columns.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from engine_harness import run_engine
from model import fits_series, model_store_to_frames, run_model, store_from_snapshot_dir
from pipeline.config import load_config
from pipeline.errors import InputFileError, LoyaltyBulkError
from pipeline.input.columns import REQUEST_COLUMNS, SOURCE_COLUMN
from pipeline.input.read import InputLayout, read_requests
from pipeline.input.wide import WideColumn, WideLayout, WideLookup
from pipeline.job import load_job, run_job
from pipeline.run import run_batch
from pipeline.store.snapshot import init_store
from test_engine_properties import CARDS, LABELS, VALUES, configs, stores

WIDE_JOB = ROOT / "jobs" / "wide_customers.toml"
NEXT_NIGHT = ROOT / "sample_data" / "next_night"
ORG = ROOT / "sample_data" / "org.toml"

# Candidate columns of the random layouts: name -> its mapping (series and status columns are named after it).
CANDIDATES: dict[str, WideColumn] = {
    "Mobile": WideColumn("Mobile", "mobile", "INSTORE"),
    "Email": WideColumn("Email", "email", "INSTORE", action="replace"),
    "Old Email": WideColumn("Old Email", "email", "INSTORE", action="remove"),
    "Old Mobile": WideColumn("Old Mobile", "mobile", "INSTORE", action="remove"),
    "WeChat": WideColumn("WeChat", "wechat", "WECHAT", "WX-MAIN"),
    "WeChat Mobile": WideColumn("WeChat Mobile", "mobile", "WECHAT", "WX-CN2", action="replace"),
    "Line": WideColumn("Line", "line", "LINE"),
    "Card": WideColumn("Card", "cardnumber", "INSTORE", series_column="Card Series", status_column="Card Status"),
    "Card By Number": WideColumn(
        "Card By Number", "cardnumber", "INSTORE", series_from_number=True, status_label="Active"
    ),
    "Returned Card": WideColumn("Returned Card", "cardnumber", "INSTORE", action="remove"),
}
LOOKUPS = [
    WideLookup("Ref Mobile", "mobile", "INSTORE"),
    WideLookup("Ref WeChat", "wechat", "WECHAT", "WX-MAIN"),
    WideLookup("Ref Card", "cardnumber"),
]
POOLS = {
    "mobile": [*VALUES["mobile"], "+61234567", "0061234569"],
    "email": [*VALUES["email"], "A@X.CO", "not an email"],
    "wechat": VALUES["wechat"],
    "line": VALUES["line"],
    "cardnumber": [*sorted(CARDS), "GLD12", "SLVX"],
}
_RANK = {"remove": 0, "add": 1, "replace": 1}


@st.composite
def layouts(draw) -> WideLayout:
    names = draw(st.lists(st.sampled_from(sorted(CANDIDATES)), min_size=1, max_size=6, unique=True))
    columns = tuple(CANDIDATES[name] for name in names)
    ignore = ("Notes",) if draw(st.booleans()) else ()
    row_id = "Ref" if draw(st.booleans()) else None
    if draw(st.integers(0, 2)) == 0:
        return WideLayout(columns=columns, lookup=draw(st.sampled_from(LOOKUPS)), row_id=row_id, ignore=ignore)
    return WideLayout(columns=columns, customer_id="User ID", row_id=row_id, ignore=ignore)


def _cell(draw, pool: list[str]) -> str:
    """Mostly empty or a value of the pool; now and then white space only (no operation either)."""
    kind = draw(st.integers(0, 9))
    return "" if kind < 4 else "  " if kind == 4 else draw(st.sampled_from(pool))


@st.composite
def wide_lines(draw, layout: WideLayout, n_customers: int) -> list[dict[str, str]]:
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        line: dict[str, str] = {}
        if layout.lookup is None:
            line["User ID"] = draw(st.sampled_from(["", *(str(c) for c in range(1, n_customers + 2))]))
        else:
            line[layout.lookup.column] = draw(st.sampled_from(["", *POOLS[layout.lookup.id_type]]))
        if layout.row_id:
            line["Ref"] = draw(st.sampled_from(["", "R1", "R2"]))
        for name in layout.ignore:
            line[name] = "anything"
        for column in layout.columns:
            line[column.column] = _cell(draw, POOLS[column.id_type])
            if column.series_column:
                line[column.series_column] = draw(st.sampled_from(["101", "102", "", "7"]))
            if column.status_column:
                line[column.status_column] = draw(st.sampled_from([*LABELS[:2], *LABELS]))
        # one value removed and added back in the same line, now and then
        if "Old Mobile" in line and "Mobile" in line and draw(st.integers(0, 3)) == 0:
            line["Old Mobile"] = line["Mobile"] = draw(st.sampled_from(POOLS["mobile"]))
        lines.append(line)
    return lines


def header_of(layout: WideLayout) -> list[str]:
    """The file's columns: the layout's, ignored ones too, in a shuffled-looking but fixed order."""
    return sorted({*layout.read_columns(), *layout.ignore}, reverse=True)


def write_csv(path: Path, header: list[str], lines: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for line in lines:
        writer.writerow([line.get(name, "") for name in header])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def series_from_number(number: str, config) -> str:
    fits = [s.id for s in config.card_series.values() if fits_series(number.strip(), s.prefix, s.suffix, s.digits)]
    return str(fits[0]) if len(fits) == 1 else ""


def long_expansion(layout: WideLayout, lines: list[dict[str, str]], config) -> list[dict[str, str | None]]:
    """SPEC section 2 by hand: each line's operations as long rows, in run order, with their line and column."""
    order = sorted(layout.columns, key=lambda c: 2 if c.id_type == "cardnumber" else _RANK[c.action])
    rows = []
    for number, line in enumerate(lines, 1):
        reference = line[layout.reference]
        for column in order:
            value = line[column.column]
            if not value.strip():
                continue
            row: dict[str, str | None] = {
                "line": str(number),
                SOURCE_COLUMN: column.column,
                "row_id": line["Ref"] if layout.row_id else None,
                "customer_id": reference if layout.lookup is None else None,
                "lookup_type": layout.lookup.id_type if layout.lookup else None,
                "lookup_value": reference if layout.lookup else None,
                "lookup_source": layout.lookup.source if layout.lookup else None,
                "lookup_account_id": layout.lookup.account_id if layout.lookup and layout.lookup.source else None,
                "source": column.source,
                "account_id": column.account_id,
                "action": column.action,
                "id_type": column.id_type,
                "id_value": value,
                "series_id": None,
                "status_label": None,
            }
            if column.id_type == "cardnumber":
                if column.series_column:
                    row["series_id"] = line[column.series_column]
                elif column.series_from_number:
                    row["series_id"] = series_from_number(value, config)
                if column.status_column:
                    row["status_label"] = line[column.status_column]
                elif column.status_label:
                    row["status_label"] = column.status_label
            rows.append(row)
    return rows


def _patterns(config) -> dict[int, str]:
    return {s.id: s.number_pattern for s in config.card_series.values()}


@pytest.mark.slow
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_operation_of_a_wide_file_equals_the_model_on_its_long_expansion(tmp_path, data):
    config, store = data.draw(configs()), data.draw(stores())
    layout = data.draw(layouts())
    lines = data.draw(wide_lines(layout, len(store.customers)))
    path = tmp_path / "wide.csv"
    write_csv(path, header_of(layout), lines)
    frame = read_requests([path], InputLayout(wide=layout, series_patterns=_patterns(config))).frame

    expected_rows = long_expansion(layout, lines, config)
    read = frame.select("row_number", SOURCE_COLUMN, *REQUEST_COLUMNS).rows(named=True)
    assert [(str(r["row_number"]), r[SOURCE_COLUMN]) for r in read] == [
        (r["line"], r[SOURCE_COLUMN]) for r in expected_rows
    ]
    for read_row, long_row in zip(read, expected_rows, strict=True):
        assert {c: read_row[c] or None for c in REQUEST_COLUMNS} == {c: long_row[c] or None for c in REQUEST_COLUMNS}

    model_store = store.copy()
    expected = run_model(model_store, expected_rows, config)
    engine = run_engine(store, expected_rows, config, frame=frame)
    for i, (want, got) in enumerate(zip(expected, engine.results, strict=True)):
        assert dataclasses.asdict(got) == dataclasses.asdict(want), f"operation {i}: {expected_rows[i]}"
    for name, want_frame in model_store_to_frames(model_store).items():
        assert engine.frames[name].rows() == want_frame.rows(), name


def test_a_lookup_finds_the_customer_in_its_own_scope_and_a_line_runs_removes_first(tmp_path):
    """Found by the INSTORE mobile, the customer gains a WECHAT identifier; a line removing and adding the
    same value in one line removes first (the add then applies), whatever the columns' order in the file."""
    config = load_config(ORG)
    store = store_from_snapshot_dir(NEXT_NIGHT, config.mobile)
    layout = WideLayout(
        columns=(
            WideColumn("WeChat", "wechat", "WECHAT", "WX-MAIN"),
            WideColumn("Email", "email", "INSTORE"),
            WideColumn("Old Email", "email", "INSTORE", action="remove"),
        ),
        lookup=WideLookup("Mobile", "mobile", "INSTORE"),
    )
    path = tmp_path / "wide.csv"
    path.write_text(
        "Email,WeChat,Mobile,Old Email\n"
        "hana@example.com,wx_hana,13800000031,hana@example.com\n"
        "x@example.com,wx_none,13800009999,\n"
        ",wx_grace,13800000020,\n",
        encoding="utf-8",
    )
    frame = read_requests([path], InputLayout(wide=layout)).frame
    assert frame.select("row_number", SOURCE_COLUMN, "action").rows() == [
        (1, "Old Email", "remove"),
        (1, "WeChat", "add"),
        (1, "Email", "add"),
        (2, "WeChat", "add"),
        (2, "Email", "add"),
        (3, "WeChat", "add"),
    ]
    rows = frame.drop("seq", "file", "row_number").to_dicts()
    engine = run_engine(store, rows, config, frame=frame)
    assert [(r.ok, r.outcome, r.error_code, r.resolved_customer_id) for r in engine.results] == [
        (True, "applied", None, 1031),
        (True, "applied", None, 1031),
        (True, "applied", None, 1031),
        (False, None, 8015, None),
        (False, None, 8015, None),
        (True, "applied", None, 1020),
    ]
    assert engine.routes["set_based"] >= 1, "line 3's one operation shares no key: decided set-based"
    held = {(r[0], *r[1:]) for r in engine.frames["identifiers"].rows()}
    assert {(1031, "WECHAT", "WX-MAIN", "wechat", "wx_hana"), (1020, "WECHAT", "WX-MAIN", "wechat", "wx_grace")} <= held
    model_store = store.copy()
    assert [dataclasses.asdict(r) for r in run_model(model_store, rows, config)] == [
        dataclasses.asdict(r) for r in engine.results
    ]
    assert engine.frames["identifiers"].rows() == model_store_to_frames(model_store)["identifiers"].rows()


def _fresh_store(folder: Path) -> Path:
    store = folder / "store.duckdb"
    init_store(store, NEXT_NIGHT, countries=load_config(ORG).mobile)
    return store


def _report(folder: Path, name: str, file_name: str) -> str:
    return (folder / name).read_text(encoding="utf-8").replace(file_name, "<input>")


def test_the_sample_wide_file_and_its_workbook_twin_give_the_same_reports(tmp_path):
    job = load_job(WIDE_JOB)
    twin = dataclasses.replace(job, inputs=(job.inputs[0].replace(".csv", ".xlsx"),))
    assert Path(twin.inputs[0]).exists()
    outcomes = {}
    for name, each in (("csv", job), ("xlsx", twin)):
        store = _fresh_store(tmp_path / name)
        each = dataclasses.replace(each, store=str(store), reports=str(tmp_path / name / "reports"))
        result = run_job(each, run_id=f"RUN-{name}")
        outcomes[name] = result
    csv_dir, xlsx_dir = tmp_path / "csv" / "reports", tmp_path / "xlsx" / "reports"
    for report in ("success.csv", "errors.csv", "merges.csv", "calls.ndjson"):
        csv_text = _report(csv_dir, report, job.inputs[0]).replace("RUN-csv", "<run>")
        xlsx_text = _report(xlsx_dir, report, twin.inputs[0]).replace("RUN-xlsx", "<run>")
        assert csv_text == xlsx_text, report
    summary = json.loads((csv_dir / "summary.json").read_text())
    assert summary["outcomes"] == {"applied": 8, "unchanged": 1, "merged": 1, "failed": 4}
    assert summary["rows"] == 14
    errors = pl.read_csv(csv_dir / "errors.csv", infer_schema=False)
    assert errors.select("row_number", "error_code", SOURCE_COLUMN).rows() == [
        ("4", "8055", "Email"),
        ("5", "7003", "Email"),
        ("7", "3027", "Card Number"),
        ("8", "8056", "Mobile"),
    ]
    assert "spreadsheet" in errors.filter(pl.col("error_code") == "8056")["error_message"][0]
    success = pl.read_csv(csv_dir / "success.csv", infer_schema=False)
    assert success.columns[-1] == SOURCE_COLUMN
    assert success.filter(pl.col("outcome") == "merged").select("victim_id", "survivor_id").rows() == [("1027", "1010")]


def test_the_errors_file_of_a_wide_run_runs_back_with_a_value_fixed(tmp_path):
    job = load_job(WIDE_JOB)
    store = _fresh_store(tmp_path)
    first = run_job(dataclasses.replace(job, store=str(store), reports=str(tmp_path / "first")))
    errors = Path(first.reports_dir) / "errors.csv"
    fixed = tmp_path / "errors-fixed.csv"
    fixed.write_text(
        errors.read_text(encoding="utf-8").replace(",hana.sato@example,", ",hana.sato@example.com,"), encoding="utf-8"
    )
    # the same job reads it (the errors file keeps its own layout, [wide] does not apply), and so does a plain run
    for name, again in (
        (
            "job",
            lambda: run_job(
                dataclasses.replace(
                    job, store=str(store), inputs=(str(fixed),), reports=str(tmp_path / "job"), max_error_rate=None
                )
            ),
        ),
        ("run", lambda: run_batch(store, ORG, [fixed], tmp_path / "run", dry_run=True, allow_reapply=True)),
    ):
        result = again()
        success = pl.read_csv(Path(result.reports_dir) / "success.csv", infer_schema=False)
        failed = pl.read_csv(Path(result.reports_dir) / "errors.csv", infer_schema=False)
        # the job applied the fixed row; the run after it finds the email already the customer's
        assert success.select("row_number", "action", "id_value", "outcome").rows() == [
            ("1", "replace", "hana.sato@example.com", "applied" if name == "job" else "unchanged")
        ]
        # the errors file's own lines, the same codes for the rows left unfixed, source_column empty now
        assert failed.select("row_number", "error_code").rows() == [("2", "7003"), ("3", "3027"), ("4", "8056")]
        assert failed[SOURCE_COLUMN].null_count() == failed.height


LAYOUT = WideLayout(
    columns=(WideColumn("Email", "email", "INSTORE"), WideColumn("Card", "cardnumber", "INSTORE", series_id="101")),
    customer_id="User ID",
    ignore=("Name",),
)


@pytest.mark.parametrize(
    ("header", "code", "named"),
    [
        ("User ID,Name,Email,Card,Phone", 7104, "'Phone' (column 5)"),
        ("User ID,Email", 7103, "'Card'"),
        ("User ID,Name,Email,Email,Card", 7102, "'Email' appears more than once"),
    ],
)
def test_a_header_that_does_not_fit_the_mapping_refuses_the_file_naming_the_columns(tmp_path, header, code, named):
    path = tmp_path / "wide.csv"
    path.write_text(f"{header}\n" + ",".join("1" for _ in header.split(",")) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError) as refused:
        read_requests([path], InputLayout(wide=LAYOUT))
    assert refused.value.code == code
    assert named in str(refused.value) and "wide.csv" in str(refused.value)


@pytest.mark.parametrize(
    ("wide", "key"),
    [
        ('customer_id = "A"\nlookup = { column = "B", id_type = "mobile", source = "INSTORE" }', "wide"),
        ('customer_id = "A"', "wide.columns"),
        (
            'customer_id = "A"\n[[wide.columns]]\ncolumn = "C"\nid_type = "cardnumber"\nsource = "INSTORE"\n'
            "series_id = 101",
            "wide.columns[0]",
        ),
        (
            'customer_id = "A"\n[[wide.columns]]\ncolumn = "C"\nid_type = "email"\nsource = "INSTORE"\naction = "swap"',
            "wide.columns[0].action",
        ),
        (
            'customer_id = "A"\n[[wide.columns]]\ncolumn = "A"\nid_type = "email"\nsource = "INSTORE"',
            "wide.customer_id",
        ),
        (
            'customer_id = "A"\nignore = ["C"]\n[[wide.columns]]\ncolumn = "C"\nid_type = "email"\nsource = "INSTORE"',
            "wide.ignore[0]",
        ),
        (
            'customer_id = "A"\n[[wide.columns]]\ncolumn = "C"\nid_type = "wechat"\nsource = "WECHAT"',
            "wide.columns[0].account_id",
        ),
        (
            'customer_id = "A"\n[[wide.columns]]\ncolumn = "C"\nid_type = "fbId"\nsource = "INSTORE"',
            "wide.columns[0].id_type",
        ),
    ],
)
def test_a_wide_mapping_that_cannot_work_stops_the_job_naming_the_key(tmp_path, wide, key):
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nstore = "s.duckdb"\nconfig = "{ORG}"\ninputs = ["{ORG}"]\n[wide]\n{wide}\n', encoding="utf-8"
    )
    with pytest.raises(LoyaltyBulkError) as refused:
        run_job(job, run_id="R")
    assert f"'{key}'" in str(refused.value) or f"{key}:" in str(refused.value), str(refused.value)
    assert not (tmp_path / "s.duckdb").exists()


def test_validate_reads_a_wide_file_as_its_job_does(tmp_path):
    """`validate --job`: the job's config and inputs, read through its [wide]; each operation's check failure is a
    row of errors.csv with the column it came from."""
    from click.testing import CliRunner

    from pipeline.cli import main

    result = CliRunner().invoke(main, ["validate", "--job", str(WIDE_JOB), "--reports", str(tmp_path / "v")])
    assert result.exit_code == 1, result.output
    assert "checked 14 row(s) in 1 file(s): 11 passed, 3 failed" in result.output
    errors = pl.read_csv(tmp_path / "v" / "errors.csv", infer_schema=False)
    assert errors.select("row_number", "error_code", SOURCE_COLUMN).rows() == [
        ("4", "8055", "Email"),
        ("5", "7003", "Email"),
        ("8", "8056", "Mobile"),
    ]
