"""Benchmark of `store refresh` against `store init` of the same snapshot (not in the test suite).

Takes the bench cache of bench/run.py (its 10M-customer snapshot and store; run that first), writes a "next
night" snapshot that differs in about 1 % of its keys with every change class present (DuckDB SQL over the
cached Parquet, deterministic), then times, round-robin on fresh copies:
  init     `store init` of the next snapshot into a new file
  refresh  `store refresh` of a copy of the cached store to the next snapshot
and quotes the medians, their ratio (target: refresh ≤ 1.3× init), each one's peak RSS (target ≤ 2.5 GiB),
the refresh's stage seconds, and how much the store file grows per refresh (undo log, provenance, ledger).
Results go to bench/RESULTS.md under "Refresh".

    .venv/bin/python bench/refresh.py [--cache DIR] [--customers 10000000] [--seed 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import duckdb

from run import CLI, GIB, measure, replace_section

BENCH = Path(__file__).resolve().parent
MARK = "## Refresh (`bench/refresh.py`)"

NEXT_SNAPSHOT_SQL = """
CREATE TABLE c AS SELECT *, hash(customer_id, 'refresh') % 10000 AS b FROM read_parquet($customers);
CREATE TABLE i AS SELECT * FROM read_parquet($identifiers);
CREATE TABLE k AS SELECT *, hash(card_number, 'refresh') % 10000 AS h FROM read_parquet($cards);
CREATE TABLE targets AS SELECT DISTINCT merged_into AS customer_id FROM c WHERE merged_into IS NOT NULL;
CREATE TABLE fate AS
SELECT customer_id,
    CASE WHEN status = 'ACTIVE' AND customer_id NOT IN (SELECT customer_id FROM targets) AND b < 20 THEN 'removed'
         WHEN status = 'ACTIVE' AND customer_id NOT IN (SELECT customer_id FROM targets) AND b < 40 THEN 'merged'
         WHEN status = 'ACTIVE' AND b < 50 THEN 'changed'
         WHEN status = 'MERGED' AND b < 100 THEN 'unmerged'
         WHEN status = 'ACTIVE' AND b >= 100 THEN 'survivor' END AS fate
FROM c;
CREATE TABLE survivors AS SELECT customer_id FROM fate WHERE fate = 'survivor';
CREATE TABLE merges AS
SELECT f.customer_id AS victim, s.customer_id AS survivor
FROM (SELECT customer_id FROM fate WHERE fate = 'merged') f ASOF JOIN survivors s ON s.customer_id > f.customer_id;
CREATE TABLE new_customers AS
SELECT (SELECT max(customer_id) FROM c) + range + 1 AS customer_id FROM range((SELECT count(*) // 200 FROM c));
CREATE TABLE template AS
SELECT source, account_id, id_type FROM i GROUP BY ALL ORDER BY count(*) DESC, source, account_id, id_type LIMIT 1;

COPY (
    SELECT c.customer_id,
        CASE WHEN m.victim IS NOT NULL THEN 'MERGED' WHEN f.fate = 'unmerged' THEN 'ACTIVE' ELSE c.status END
            AS status,
        CASE WHEN m.victim IS NOT NULL THEN m.survivor WHEN f.fate = 'unmerged' THEN NULL ELSE c.merged_into END
            AS merged_into,
        CASE WHEN f.fate = 'changed' THEN CASE c.customer_type WHEN 'LOYALTY' THEN 'CAMPAIGN' ELSE 'LOYALTY' END
             ELSE c.customer_type END AS customer_type
    FROM c JOIN fate f USING (customer_id) LEFT JOIN merges m ON m.victim = c.customer_id
    WHERE f.fate IS DISTINCT FROM 'removed'
    UNION ALL SELECT customer_id, 'ACTIVE', NULL, 'LOYALTY' FROM new_customers
) TO $out_customers (FORMAT parquet);

CREATE TABLE moved AS
SELECT m.survivor AS customer_id, i.source, i.account_id, i.id_type, i.id_value
FROM i JOIN merges m ON i.customer_id = m.victim
ANTI JOIN i AS held ON held.customer_id = m.survivor AND held.source = i.source AND held.account_id = i.account_id
    AND held.id_type = i.id_type
QUALIFY row_number() OVER (PARTITION BY m.survivor, i.source, i.account_id, i.id_type ORDER BY i.id_value) = 1;
COPY (
    SELECT i.* FROM i JOIN fate f USING (customer_id)
    WHERE f.fate IS DISTINCT FROM 'removed' AND f.fate IS DISTINCT FROM 'merged'
      AND hash(i.id_type, i.id_value, 'refresh') % 10000 >= 30
    UNION ALL SELECT * FROM moved
    UNION ALL SELECT n.customer_id, t.source, t.account_id, t.id_type, concat('refresh-new-', n.customer_id)
        FROM new_customers n, template t
) TO $out_identifiers (FORMAT parquet);

CREATE TABLE linkable AS SELECT customer_id, hash(customer_id, 'card') AS r FROM survivors;
COPY (
    SELECT k.card_number,
        CASE WHEN k.customer_id IS NULL AND k.h >= 100 AND k.h < 110
             THEN CASE k.series_id WHEN 101 THEN 102 ELSE 101 END ELSE k.series_id END AS series_id,
        CASE WHEN f.fate = 'removed' THEN NULL
             WHEN m.victim IS NOT NULL THEN m.survivor
             WHEN k.customer_id IS NOT NULL AND k.h < 20 THEN NULL
             WHEN k.customer_id IS NULL AND k.status_label = 'Not Issued' AND k.h >= 20 AND k.h < 60
                 THEN (SELECT min(customer_id) FROM survivors)
             ELSE k.customer_id END AS customer_id,
        CASE WHEN f.fate = 'removed' OR (k.customer_id IS NOT NULL AND k.h < 20) THEN 'Not Issued'
             WHEN k.customer_id IS NULL AND k.status_label = 'Not Issued' AND k.h >= 20 AND k.h < 60 THEN 'Issued'
             WHEN k.customer_id IS NOT NULL AND k.status_label = 'Active' AND k.h >= 60 AND k.h < 100 THEN 'Blocked'
             ELSE k.status_label END AS status_label
    FROM k LEFT JOIN fate f ON f.customer_id = k.customer_id LEFT JOIN merges m ON m.victim = k.customer_id
    WHERE NOT (k.customer_id IS NULL AND k.h < 20)
    UNION ALL SELECT concat('RFN', lpad(range::VARCHAR, 10, '0')), 101, NULL, 'Not Issued'
        FROM range((SELECT count(*) // 200 FROM k))
) TO $out_cards (FORMAT parquet)
"""
"""A next night of the bench org: 0.2 % of customers removed (their identifiers with them, their cards delinked),
0.2 % merged into the next untouched active customer (identifiers moved where the survivor's slot is free, else
gone; cards relinked), 0.1 % of types changed, 1 % of merged customers unmerged, 0.5 % new customers with an
identifier each, 0.3 % of identifiers removed; cards: 0.2 % delinked, 0.4 % linked, relabelled, series changed,
removed, 0.5 % new. Every store invariant holds (the refresh checks them)."""


def write_next_snapshot(dataset: Path) -> Path:
    out = dataset / "refresh-next"
    if (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    snapshot = dataset / "snapshot"
    params = {f"{t}": str(snapshot / f"{t}.parquet") for t in ("customers", "identifiers", "cards")}
    params |= {f"out_{t}": str(out / f"{t}.parquet") for t in ("customers", "identifiers", "cards")}
    with duckdb.connect(config={"memory_limit": "4GB", "temp_directory": str(dataset / "spill")}) as con:
        for statement in filter(str.strip, NEXT_SNAPSHOT_SQL.split(";")):
            con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
    (out / ".done").touch()
    return out


def refresh_once(dataset: Path, snapshot: Path, work: Path, config: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "store.duckdb"
    shutil.copyfile(dataset / "store.duckdb", store)
    with store.open("rb+") as f:  # flushed before the timed run, as bench/run.py's copies are
        os.fsync(f.fileno())
    size, used = store.stat().st_size, used_bytes(store)
    m = measure(
        [
            CLI,
            "store",
            "refresh",
            str(store),
            "--snapshot",
            str(snapshot),
            "--config",
            str(config),
            "--json",
            "--reports",
            str(work / "reports"),
        ],
        3600,
    )
    run = m.record()
    if m.exit_code == 0:
        summary = json.loads(m.stdout)
        run["stages"] = summary["stage_seconds"]
        run["changed_keys"] = summary["changed_keys"]
        run["changes"] = summary["changes"]
        run["store_growth"] = sum(p.stat().st_size for p in work.glob("store.duckdb*") if p.is_file()) - size
        run["used_growth"] = used_bytes(store) - used
        with duckdb.connect(str(store), read_only=True) as con:
            run["log_rows"] = dict(
                con.execute(
                    "SELECT 'undo', (SELECT count(*) FROM undo_identifiers) + (SELECT count(*) FROM undo_customer_rows)"
                    " + (SELECT count(*) FROM undo_card_rows) UNION ALL SELECT 'provenance', count(*) FROM provenance"
                ).fetchall()
            )
    shutil.rmtree(work, ignore_errors=True)
    return run


def used_bytes(store: Path) -> int:
    """The bytes of the store file's blocks in use (a file keeps its size when blocks are freed and reused)."""
    with duckdb.connect(str(store), read_only=True) as con:
        blocks, block_size = con.execute("SELECT used_blocks, block_size FROM pragma_database_size()").fetchall()[0]
    return int(blocks) * int(block_size)


def init_once(snapshot: Path, work: Path) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    m = measure([CLI, "store", "init", str(work / "init.duckdb"), "--snapshot", str(snapshot)], 3600)
    shutil.rmtree(work, ignore_errors=True)
    return m.record()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="~/.cache/loyalty-bulk-bench")
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    dataset = Path(args.cache).expanduser() / f"{args.customers}-{args.seed}"
    if not (dataset / "store.duckdb").exists():
        raise SystemExit(f"no bench store in {dataset}: run bench/run.py --cache {args.cache} --only e first")
    snapshot = write_next_snapshot(dataset)
    runs: dict[str, list[dict[str, Any]]] = {"init": [], "refresh": []}
    for i in range(args.repeat):
        runs["init"].append(init_once(snapshot, dataset / "work-refresh"))
        runs["refresh"].append(refresh_once(dataset, snapshot, dataset / "work-refresh", dataset / "org.toml"))
        print(
            f"round {i + 1}: init {runs['init'][-1]['seconds']:.1f} s ({runs['init'][-1]['max_rss'] / GIB:.2f} GiB), "
            f"refresh {runs['refresh'][-1]['seconds']:.1f} s ({runs['refresh'][-1]['max_rss'] / GIB:.2f} GiB), "
            f"exit {runs['refresh'][-1]['exit_code']}",
            flush=True,
        )
    init_s = statistics.median(r["seconds"] for r in runs["init"])
    refresh_s = statistics.median(r["seconds"] for r in runs["refresh"])
    ratios = [r["seconds"] / i["seconds"] for r, i in zip(runs["refresh"], runs["init"], strict=True)]
    done = [r for r in runs["refresh"] if r["exit_code"] == 0]
    lines = [
        f"- command: `python bench/refresh.py --cache {args.cache} --repeat {args.repeat}`",
        f"- next snapshot: {snapshot}; changed keys: {done[0]['changed_keys'] if done else '-'}",
        f"- `store init` of it: median {init_s:.1f} s, peak RSS "
        f"{max(r['max_rss'] for r in runs['init']) / GIB:.2f} GiB",
        f"- `store refresh` to it: median {refresh_s:.1f} s, peak RSS "
        f"{max(r['max_rss'] for r in runs['refresh']) / GIB:.2f} GiB",
        f"- refresh / init: {refresh_s / init_s:.2f}× (rounds {', '.join(f'{x:.2f}' for x in ratios)}); "
        "target ≤ 1.3×, RSS ≤ 2.5 GiB",
    ]
    if done:
        stages = {k: statistics.median(r["stages"][k] for r in done) for k in done[0]["stages"]}
        lines.append("- refresh stages (medians, s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        growth = statistics.median(r["store_growth"] for r in done)
        used = statistics.median(r["used_growth"] for r in done)
        lines.append(
            f"- store growth per refresh: file {growth / 2**20:.1f} MiB, blocks in use {used / 2**20:.1f} MiB "
            f"(undo log {done[0]['log_rows']['undo']:,} rows, provenance {done[0]['log_rows']['provenance']:,} rows;"
            " the file reuses the blocks its deleted rows freed)"
        )
        lines.append("- changes: " + json.dumps(done[0]["changes"]))
    print("\n".join([MARK, "", *lines]))
    replace_section(args.out, MARK, [*lines, ""])


if __name__ == "__main__":
    main()
