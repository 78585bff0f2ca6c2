"""`store audit`: every invariant of SPEC section 1 checked on an existing store, read-only.

The store-only invariants are `store.find_invariant_violations` (the same check `store init` runs on
a snapshot). With an org config, the facts that depend on it are checked too: every identifier's
source, account and id type are known to the config, account_id is '' exactly for single-account
sources, every card's series and label are configured, and every card number fits its series.

The config is exposed to DuckDB as registered frames, never as SQL text, like the run's own
(engine/rules.register). Findings use the columns of `store.FINDING_COLUMNS`, one row per breach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from pipeline.config import CARD, MobileCountries, OrgConfig, load_config
from pipeline.errors import EXIT_OK, EXIT_ROWS_FAILED
from pipeline.files import write_csv
from pipeline.results import StoreCounts
from pipeline.store.connect import open_store
from pipeline.store.invariants import FINDING_COLUMNS, find_invariant_violations
from pipeline.store.mobiles import mobile_changes
from pipeline.store.schema import store_counts

EXIT_FINDINGS = EXIT_ROWS_FAILED
"""`store audit` exits 1 when the store breaks an invariant (0 when clean), like a run with failed rows."""

CONFIG_FINDINGS_SQL = """
WITH idents AS (
    SELECT i.*, s.kind AS source_kind
    FROM identifiers i LEFT JOIN audit_sources s ON s.source = i.source
    WHERE i.customer_id IS NOT NULL AND i.source IS NOT NULL AND i.account_id IS NOT NULL
      AND i.id_type IS NOT NULL AND i.id_value IS NOT NULL
),
described AS (
    SELECT *, concat('customer_id=', customer_id, ' source=', source, ' account_id=', account_id,
                     ' id_type=', id_type, ' id_value=', id_value) AS row_key
    FROM idents
)
SELECT 'identifier_source_known', 'identifiers', row_key,
       concat('source ''', source, ''' is not a source of the org config')
FROM described WHERE source_kind IS NULL
UNION ALL
SELECT 'identifier_account_known', 'identifiers', row_key,
       CASE WHEN source_kind = 'single'
            THEN concat('source ''', source, ''' is single-account, so account_id must be empty')
            WHEN account_id = '' THEN concat('source ''', source, ''' is multi-account, so account_id is required')
            ELSE concat('account_id ''', account_id, ''' is not an account of source ''', source, '''') END
FROM described d
WHERE (source_kind = 'single' AND account_id <> '')
   OR (source_kind = 'multi' AND NOT EXISTS (
        SELECT 1 FROM audit_accounts a WHERE a.source = d.source AND a.account_id = d.account_id))
UNION ALL
SELECT 'identifier_type_allowed', 'identifiers', row_key,
       concat('id_type ''', id_type, ''' is not accepted by source ''', source, '''')
FROM described d
WHERE source_kind IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM audit_id_types t WHERE t.source = d.source AND t.id_type = d.id_type)
UNION ALL
SELECT 'card_series_known', 'cards', concat('card_number=', c.card_number),
       concat('series_id ', c.series_id, ' is not a card series of the org config')
FROM cards c
WHERE c.card_number IS NOT NULL AND c.series_id IS NOT NULL
  AND c.series_id NOT IN (SELECT series_id FROM audit_series)
UNION ALL
SELECT 'card_number_fits_series', 'cards', concat('card_number=', c.card_number),
       concat('card number does not fit series ', c.series_id, ' (', s.code, ')')
FROM cards c JOIN audit_series s ON s.series_id = c.series_id
WHERE c.card_number IS NOT NULL AND NOT regexp_full_match(c.card_number, s.pattern)
UNION ALL
SELECT 'card_label_known', 'cards', concat('card_number=', c.card_number),
       concat('status_label ''', c.status_label, ''' is not a card label of the org config')
FROM cards c
WHERE c.card_number IS NOT NULL AND c.status_label IS NOT NULL AND c.status_label <> ''
  AND c.status_label NOT IN (SELECT label FROM audit_labels)
"""


@dataclass(frozen=True)
class AuditResult:
    """The outcome of one audit: the findings (FINDING_COLUMNS), where they were written, the counts."""

    store_path: str
    config_path: str | None
    findings: pl.DataFrame
    report_path: str
    counts: StoreCounts
    seconds: float

    @property
    def exit_code(self) -> int:
        return EXIT_FINDINGS if self.findings.height else EXIT_OK

    def by_invariant(self) -> dict[str, int]:
        """Number of findings per invariant name, most frequent first."""
        counted = self.findings.group_by("invariant").len().sort(["len", "invariant"], descending=[True, False])
        return {name: int(n) for name, n in counted.iter_rows()}

    def render(self, examples: int = 3) -> str:
        """The console summary: verdict, counts per invariant with a few example rows, the report path."""
        scope = "SPEC section 1 invariants" + (f" and config {self.config_path}" if self.config_path else "")
        lines = [f"audit {self.store_path}: {self.counts.render()}; checked {scope} in {self.seconds:.2f} s"]
        if not self.findings.height:
            lines.append("  clean: no invariant is broken")
        else:
            lines.append(f"  {self.findings.height} finding(s)")
            for name, n in self.by_invariant().items():
                lines.append(f"    {name}: {n}")
                rows = self.findings.filter(pl.col("invariant") == name).head(examples)
                for table, row_key, detail in rows.select("table", "row_key", "detail").iter_rows():
                    lines.append(f"      {table} {row_key}: {detail}")
        lines.append(f"  report: {self.report_path}")
        return "\n".join(lines)


def audit_store(
    path: Path | str, config_path: Path | str | None = None, report_path: Path | str | None = None
) -> AuditResult:
    """Check every invariant of SPEC section 1 (and, with a config, its config facts) on a store.

    The store is opened read-only, so an audit never changes it and may run beside readers. The
    findings are written as CSV to `report_path` (default `<store>.audit.csv`), header only when clean.
    """
    started = time.perf_counter()
    store_path = Path(path)
    config = load_config(config_path) if config_path is not None else None
    report = Path(report_path) if report_path is not None else Path(f"{store_path}.audit.csv")
    con = open_store(store_path, read_only=True)
    try:
        parts = [find_invariant_violations(con)]
        if config is not None:
            parts.append(config_violations(con, config))
        counts = store_counts(con)
    finally:
        con.close()
    findings = pl.concat([p.cast(dict.fromkeys(FINDING_COLUMNS, pl.String)) for p in parts]).sort(FINDING_COLUMNS)
    report.parent.mkdir(parents=True, exist_ok=True)
    write_csv(findings, report)
    return AuditResult(
        store_path=str(store_path),
        config_path=None if config_path is None else str(config_path),
        findings=findings,
        report_path=str(report),
        counts=counts,
        seconds=time.perf_counter() - started,
    )


def config_violations(con: duckdb.DuckDBPyConnection, config: OrgConfig) -> pl.DataFrame:
    """Identifiers and cards whose source, account, id type, series, number or label the config does not know."""
    frames = _config_frames(config)
    for name, frame in frames.items():
        con.register(name, frame)
    try:
        rows = con.execute(CONFIG_FINDINGS_SQL).fetchall()
    finally:
        for name in frames:
            con.unregister(name)
    findings = pl.DataFrame(rows, schema=list(FINDING_COLUMNS), orient="row")
    if config.mobile is None:
        return findings
    parts = [findings, _mobile_findings(con, config.mobile)]
    return pl.concat([p.cast(dict.fromkeys(FINDING_COLUMNS, pl.String)) for p in parts])


MOBILE_FINDINGS_SQL = """
SELECT 'mobile_read_with_countries', 'identifiers',
       concat('customer_id=', i.customer_id, ' source=', i.source, ' account_id=', i.account_id,
              ' id_type=mobile id_value=', i.id_value),
       concat('reads as ', m.normalised, ' with the [mobile] countries ', $countries,
              '; store set-config re-reads stored mobiles')
FROM identifiers i JOIN audit_mobile_changes m ON m.value = i.id_value
WHERE i.id_type = 'mobile'
"""


def _mobile_findings(con: duckdb.DuckDBPyConnection, countries: MobileCountries) -> pl.DataFrame:
    """Stored mobiles that the config's `[mobile]` countries read as another value (the same rule as
    the check stage and `store init --config`, pipeline.values.mobile)."""
    changes = mobile_changes(con, countries)
    con.register("audit_mobile_changes", changes)
    try:
        rows = con.execute(MOBILE_FINDINGS_SQL, {"countries": countries.key}).fetchall()
    finally:
        con.unregister("audit_mobile_changes")
    return pl.DataFrame(rows, schema=list(FINDING_COLUMNS), orient="row")


def _config_frames(config: OrgConfig) -> dict[str, pl.DataFrame]:
    """The config facts the audit query joins against, one small frame per registered view name."""
    sources = config.sources.values()
    return {
        "audit_sources": pl.DataFrame(
            {"source": [s.name for s in sources], "kind": [s.kind for s in sources]},
            schema={"source": pl.String, "kind": pl.String},
        ),
        "audit_accounts": pl.DataFrame(
            [(s.name, a) for s in sources for a in s.accounts],
            schema={"source": pl.String, "account_id": pl.String},
            orient="row",
        ),
        "audit_id_types": pl.DataFrame(
            [(s.name, t) for s in sources for t in sorted(s.id_types | {CARD})],
            schema={"source": pl.String, "id_type": pl.String},
            orient="row",
        ),
        "audit_series": pl.DataFrame(
            [(s.id, s.code, s.number_pattern) for s in config.card_series.values()],
            schema={"series_id": pl.Int64, "code": pl.String, "pattern": pl.String},
            orient="row",
        ),
        "audit_labels": pl.DataFrame({"label": list(config.card_labels)}, schema={"label": pl.String}),
    }
