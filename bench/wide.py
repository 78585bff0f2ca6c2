"""Benchmark of a wide file (a job's [wide]) against its long expansion, and of a workbook against CSV (not in the
test suite).

Takes the bench cache of bench/run.py (its 10M-customer snapshot and store; run that first) and writes, with
DuckDB SQL over the cached Parquet (deterministic):
  wide.csv   --lines lines, one per customer: User ID, a name (ignored) and six identifier columns, about half
             of the cells filled (Old Email a remove of the customer's stored INSTORE email, Email and Mobile
             replaces, WeChat, App CUID and Line adds), about 3M operations for 1M lines
  long.csv   its long expansion: the same operations as request rows in the order a wide line runs them
             (removes, then adds and replaces, in column order)
and times, round-robin on fresh copies of the store:
  wide  `loyalty-bulk job wide.toml` (the [wide] job reading wide.csv)
  long  `loyalty-bulk run long.csv`
quoting the medians and their ratio (target: wide ≤ 1.15× long) and checking that both runs' outcomes and
error counts are equal. Then it times reading --workbook-rows rows as an Excel workbook against the same rows
as CSV (read_requests in this process, median of --repeat). Results go to bench/RESULTS.md under "Wide files".

    .venv/bin/python bench/wide.py [--cache DIR] [--customers 10000000] [--seed 1] [--lines 1000000]
                                   [--workbook-rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import duckdb

from run import CLI, GIB, measure, replace_section

BENCH = Path(__file__).resolve().parent
MARK = "## Wide files (`bench/wide.py`)"

COLUMNS = (
    # (column, id_type, source, account_id, action, rank in a line: removes 0, adds and replaces 1)
    ("Old Email", "email", "INSTORE", "", "remove", 0),
    ("Mobile", "mobile", "INSTORE", "", "replace", 1),
    ("Email", "email", "INSTORE", "", "replace", 1),
    ("WeChat", "wechat", "WECHAT", "WX-MAIN", "add", 1),
    ("App CUID", "cuid", "MOBILE_APP", "", "add", 1),
    ("Line", "line", "LINE", "", "add", 1),
)

WIDE_SQL = """
CREATE TABLE picked AS
SELECT customer_id, hash(customer_id, 'wide') AS h
FROM read_parquet($customers) WHERE status = 'ACTIVE'
ORDER BY hash(customer_id, 'wide-order') LIMIT $lines;
CREATE TABLE held_email AS
SELECT customer_id, min(id_value) AS email FROM read_parquet($identifiers)
WHERE source = 'INSTORE' AND id_type = 'email' AND customer_id IN (SELECT customer_id FROM picked) GROUP BY ALL;
CREATE TABLE wide AS
SELECT row_number() OVER () AS line_no, p.customer_id AS "User ID", 'Name ' || (p.h % 1000) AS "First Name",
    CASE WHEN p.h % 10 < 3 THEN e.email END AS "Old Email",
    CASE WHEN (p.h // 10) % 10 < 5 THEN '8613' || lpad(((p.h // 100) % 1000000000)::VARCHAR, 9, '0') END AS "Mobile",
    CASE WHEN (p.h // 1000) % 10 < 5 THEN 'wide' || p.customer_id || '@example.com' END AS "Email",
    CASE WHEN (p.h // 10000) % 10 < 5 THEN 'wxw_' || p.customer_id END AS "WeChat",
    CASE WHEN (p.h // 100000) % 10 < 5 THEN 'cuidw-' || p.customer_id END AS "App CUID",
    CASE WHEN (p.h // 1000000) % 10 < 6 THEN 'linew_' || p.customer_id END AS "Line"
FROM picked p LEFT JOIN held_email e USING (customer_id);
COPY (SELECT * EXCLUDE (line_no) FROM wide ORDER BY line_no) TO $wide_out (HEADER, DELIMITER ',');
"""


def long_sql() -> str:
    """The long expansion: one row per non-empty cell, in a wide line's run order."""
    parts = [
        f"""SELECT line_no, {rank} AS rank, {i} AS position, "User ID" AS customer_id, '{source}' AS source,
            '{account}' AS account_id, '{action}' AS action, '{id_type}' AS id_type, "{column}" AS id_value
        FROM wide WHERE "{column}" IS NOT NULL"""
        for i, (column, id_type, source, account, action, rank) in enumerate(COLUMNS)
    ]
    return (
        "COPY (SELECT customer_id, source, account_id, action, id_type, id_value FROM ("
        + " UNION ALL ".join(parts)
        + ") ORDER BY line_no, rank, position) TO $long_out (HEADER, DELIMITER ',')"
    )


def job_toml(store: Path, config: Path, wide: Path) -> str:
    entries = "\n".join(
        f'[[wide.columns]]\ncolumn = "{column}"\nid_type = "{id_type}"\nsource = "{source}"\n'
        + (f'account_id = "{account}"\n' if account else "")
        + f'action = "{action}"\n'
        for column, id_type, source, account, action, _ in COLUMNS
    )
    return (
        f'[job]\nname = "wide"\nstore = "{store}"\nconfig = "{config}"\ninputs = ["{wide}"]\n\n'
        f'[wide]\ncustomer_id = "User ID"\nignore = ["First Name"]\n\n{entries}'
    )


def write_files(dataset: Path, lines: int) -> tuple[Path, Path, int]:
    out = dataset / f"wide-{lines}"
    wide, long = out / "wide.csv", out / "long.csv"
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        snapshot = dataset / "snapshot"
        with duckdb.connect() as con:
            con.execute("SET enable_progress_bar = false")
            params = {
                "customers": str(snapshot / "customers.parquet"),
                "identifiers": str(snapshot / "identifiers.parquet"),
                "lines": lines,
                "wide_out": str(wide),
                "long_out": str(long),
            }
            for statement in [s for s in WIDE_SQL.split(";") if s.strip()] + [long_sql()]:
                con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
        (out / ".done").touch()
    with long.open("rb") as f:
        operations = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1
    return wide, long, operations


def fresh_store(dataset: Path, work: Path) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "store.duckdb"
    shutil.copyfile(dataset / "store.duckdb", store)
    with store.open("rb+") as f:  # flushed before the timed run, as bench/run.py's copies are
        os.fsync(f.fileno())
    return store


def run_once(kind: str, dataset: Path, wide: Path, long: Path) -> dict[str, Any]:
    work = dataset / "work-wide"
    store = fresh_store(dataset, work)
    reports = work / "reports"
    config = dataset / "org.toml"
    if kind == "wide":
        job = work / "wide.toml"
        job.write_text(job_toml(store, config, wide), encoding="utf-8")
        cmd = [CLI, "job", str(job), "--reports", str(reports)]
    else:
        cmd = [CLI, "run", "--store", str(store), "--config", str(config), "--reports", str(reports), str(long)]
    m = measure(cmd, 3600)
    run = m.record((0, 1))  # 1: some rows failed, as the batch means them to
    summary_path = reports / "summary.json"
    if m.exit_code in (0, 1) and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        run["stages"] = summary["stage_seconds"]
        run["outcomes"] = summary["outcomes"]
        run["errors_by_code"] = {code: e["count"] for code, e in summary["errors_by_code"].items()}
        run["rows"] = summary["rows"]
    shutil.rmtree(work, ignore_errors=True)
    return run


def workbook_vs_csv(dataset: Path, rows: int, repeat: int) -> dict[str, Any]:
    """Seconds to read `rows` request rows as an .xlsx workbook and as CSV (read_requests, medians)."""
    import polars as pl
    import xlsxwriter

    from pipeline.input.read import read_requests

    out = dataset / f"workbook-{rows}"
    csv, xlsx = out / "requests.csv", out / "requests.xlsx"
    if not (out / ".done").exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        frame = pl.read_csv(dataset / "batch-1000000" / "requests.csv", infer_schema=False, n_rows=rows)
        frame.write_csv(csv)
        book = xlsxwriter.Workbook(str(xlsx), {"constant_memory": True})
        sheet = book.add_worksheet()
        sheet.write_row(0, 0, frame.columns)
        for i, row in enumerate(frame.iter_rows(), 1):
            sheet.write_row(i, 0, ["" if v is None else v for v in row])
        book.close()
        (out / ".done").touch()
    seconds: dict[str, list[float]] = {"csv": [], "xlsx": []}
    for _ in range(repeat):
        for kind, path in (("csv", csv), ("xlsx", xlsx)):
            started = time.perf_counter()
            batch = read_requests([path])
            seconds[kind].append(time.perf_counter() - started)
            assert batch.frame.height == rows, (kind, batch.frame.height)
    return {kind: statistics.median(values) for kind, values in seconds.items()} | {"runs": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workbook-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    dataset = Path(args.cache).expanduser() / f"{args.customers}-{args.seed}"
    if not (dataset / "store.duckdb").exists():
        raise SystemExit(f"no bench store in {dataset}: run bench/run.py --cache {args.cache} --only e first")
    started = time.strftime("%Y-%m-%d %H:%M")
    wide, long, operations = write_files(dataset, args.lines)
    print(f"{args.lines:,} wide lines, {operations:,} operations", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"wide": [], "long": []}
    for i in range(args.repeat):
        for kind in ("wide", "long") if i % 2 == 0 else ("long", "wide"):
            runs[kind].append(run_once(kind, dataset, wide, long))
        print(
            f"round {i + 1}: wide {runs['wide'][-1]['seconds']:.1f} s ({runs['wide'][-1]['max_rss'] / GIB:.2f} GiB, "
            f"exit {runs['wide'][-1]['exit_code']}), long {runs['long'][-1]['seconds']:.1f} s "
            f"({runs['long'][-1]['max_rss'] / GIB:.2f} GiB, exit {runs['long'][-1]['exit_code']})",
            flush=True,
        )
    same = all(
        w.get("outcomes") == g.get("outcomes") and w.get("errors_by_code") == g.get("errors_by_code")
        for w, g in zip(runs["wide"], runs["long"], strict=True)
    )
    wide_s = statistics.median(r["seconds"] for r in runs["wide"])
    long_s = statistics.median(r["seconds"] for r in runs["long"])
    ratios = [w["seconds"] / g["seconds"] for w, g in zip(runs["wide"], runs["long"], strict=True)]
    stages = {
        kind: {stage: round(statistics.median(r["stages"][stage] for r in done), 2) for stage in done[0]["stages"]}
        for kind, done in ((k, [r for r in v if "stages" in r]) for k, v in runs.items())
        if done
    }
    book = workbook_vs_csv(dataset, args.workbook_rows, args.repeat)
    lines = [
        f"- command: `python bench/wide.py --cache {args.cache} --repeat {args.repeat}`",
        f"- {args.lines:,} wide lines (six identifier columns, about half the cells filled) = {operations:,} "
        "operations; the long file is the same operations as request rows, in a wide line's order",
        f"- `job` of the wide file: median {wide_s:.1f} s, peak RSS "
        f"{statistics.median(r['max_rss'] for r in runs['wide']) / GIB:.2f} GiB",
        f"- `run` of its long expansion: median {long_s:.1f} s, peak RSS "
        f"{statistics.median(r['max_rss'] for r in runs['long']) / GIB:.2f} GiB",
        f"- wide / long: {wide_s / long_s:.2f}× (rounds {', '.join(f'{r:.2f}' for r in ratios)}); target ≤ 1.15×",
        f"- same outcomes and error counts in every round: {'yes' if same else 'NO'} "
        f"({json.dumps(runs['long'][0].get('outcomes'))})",
        f"- stage seconds (medians): wide {json.dumps(stages.get('wide'))}; long {json.dumps(stages.get('long'))}",
        f"- reading {args.workbook_rows:,} request rows: workbook (calamine) {book['xlsx']:.2f} s, the same rows "
        f"as CSV {book['csv']:.2f} s ({book['xlsx'] / book['csv']:.0f}×; medians of {args.repeat}, read_requests "
        "in one process)",
        f"- run {started}–{time.strftime('%H:%M')}",
    ]
    print("\n".join(lines))
    replace_section(args.out, MARK, lines)


if __name__ == "__main__":
    main()
