"""The org boundary: a store belongs to one org config, recorded by identity on its first run.

A run with a config of another identity is refused (exit 3) until `store set-config` records the
change, in the store's meta data and in its ledger. The countries of `[mobile]` are part of that
boundary even for a store no run has bound yet: a store records which countries its mobiles were
read with ('' for the plain rule: `store init` without `--config`, and stores made before
`[mobile]`), and a run whose config reads mobiles otherwise is refused, dry runs included, until
`store set-config` has re-read the stored mobiles.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipeline.config import OrgConfig, load_config
from pipeline.errors import StoreError
from pipeline.files import write_csv
from pipeline.store import ledger
from pipeline.store.connect import open_store
from pipeline.store.duck import transaction
from pipeline.store.invariants import scope_collisions
from pipeline.store.mobiles import MOBILE_COUNTRIES_KEY, read_stored_mobiles, stored_mobile_countries

_KEYS = ("org_config_identity", "org_config_path", "org_config_bound_at")


def bound_config(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute("SELECT key, value FROM store_meta WHERE key IN (?, ?, ?)", list(_KEYS)).fetchall()
    return dict(rows)


def refuse_other_config(con: duckdb.DuckDBPyConnection, config: OrgConfig, store_path: Path | str) -> None:
    """Refuse a config whose identity differs from the one the store is bound to."""
    bound = bound_config(con)
    identity = bound.get("org_config_identity")
    if identity and identity != config.identity:
        raise StoreError(
            f"store {store_path} belongs to org config {identity[:12]} ({bound.get('org_config_path')}, "
            f"bound {bound.get('org_config_bound_at')}); {config.path} is {config.identity[:12]}; "
            f"nothing was applied. If the org config really changed, record it first with "
            f"'loyalty-bulk store set-config {store_path} --config {config.path}'"
        )
    stored, wanted = stored_mobile_countries(con), _countries_key(config)
    if stored != wanted:
        raise StoreError(
            f"store {store_path} holds mobiles read {_describe(stored)}, but {config.path} reads them "
            f"{_describe(wanted)}; nothing was applied. Re-read the stored mobiles first with "
            f"'loyalty-bulk store set-config {store_path} --config {config.path}'"
        )


def _countries_key(config: OrgConfig) -> str:
    return config.mobile.key if config.mobile is not None else ""


def _describe(countries_key: str) -> str:
    return f"with the [mobile] countries {countries_key}" if countries_key else "by the plain rule (no [mobile])"


def bind(con: duckdb.DuckDBPyConnection, config: OrgConfig) -> None:
    """Record the config as the store's own, inside the caller's transaction."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in zip(_KEYS, (config.identity, config.path, now), strict=True):
        con.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [key, value])


def set_config(
    store_path: Path | str, config_path: Path | str, run_id: str, report_path: Path | str | None = None
) -> str:
    """Bind the store to a (new) org config and record the change in the ledger.

    When the config reads mobiles with other `[mobile]` countries than the store's, the stored
    mobiles are re-normalised in the same transaction; two values of one scope that become equal
    refuse the change (StoreError, exit 3, nothing changed) with a CSV report naming the rows.
    """
    config = load_config(config_path)
    report = Path(report_path) if report_path is not None else Path(f"{store_path}.set-config-report.csv")
    con = open_store(store_path)
    try:
        previous = bound_config(con).get("org_config_identity")
        stored, wanted = stored_mobile_countries(con), _countries_key(config)
        changed = 0
        with transaction(con):
            if stored != wanted:
                changed = _reread_mobiles(con, config, store_path, report)
            bind(con, config)
            ledger.record_event(
                con,
                run_id,
                "set-config",
                {
                    "from": previous,
                    "to": config.identity,
                    "config": str(config_path),
                    "mobile_countries": {"from": stored, "to": wanted, "values_changed": changed},
                },
            )
    finally:
        con.close()
    was = f"was {previous[:12]}" if previous else "was unbound"
    message = f"store {store_path} now belongs to org config {config.identity[:12]} ({config_path}); {was}"
    if stored != wanted:
        message += f"; stored mobiles re-read {_describe(wanted)}: {changed} distinct value(s) changed"
    return message


def _reread_mobiles(con: duckdb.DuckDBPyConnection, config: OrgConfig, store_path: Path | str, report: Path) -> int:
    """Re-normalise the stored mobiles for the config; refuse when a scope would hold a value twice."""
    if config.mobile is None:
        # the plain rule leaves digits as they are: mobiles read with countries are plain-rule values too
        con.execute("INSERT OR REPLACE INTO store_meta VALUES (?, '')", [MOBILE_COUNTRIES_KEY])
        return 0
    changed = read_stored_mobiles(con, config.mobile)
    collisions = scope_collisions(con) if changed else None
    if collisions is not None and collisions.height:
        write_csv(collisions, report)
        raise StoreError(
            f"store {store_path}: re-reading its mobiles with the [mobile] countries {config.mobile.key} "
            f"makes {collisions.height} value(s) equal within a scope; see {report}; nothing was changed"
        )
    return changed
