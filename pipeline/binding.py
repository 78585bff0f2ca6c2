"""The org boundary: a store belongs to one org config, recorded by identity on its first run.

A run with a config of another identity is refused (exit 3) until `store set-config` records the
change, in the store's meta data and in its ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipeline import ledger
from pipeline.config import OrgConfig, load_config
from pipeline.errors import StoreError
from pipeline.store import open_store

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


def bind(con: duckdb.DuckDBPyConnection, config: OrgConfig) -> None:
    """Record the config as the store's own, inside the caller's transaction."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in zip(_KEYS, (config.identity, config.path, now), strict=True):
        con.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [key, value])


def set_config(store_path: Path | str, config_path: Path | str, run_id: str) -> str:
    """Bind the store to a (new) org config and record the change in the ledger."""
    config = load_config(config_path)
    con = open_store(store_path)
    try:
        ledger.ensure(con)
        previous = bound_config(con).get("org_config_identity")
        con.execute("BEGIN TRANSACTION")
        bind(con, config)
        ledger.record_event(
            con, run_id, "set-config", {"from": previous, "to": config.identity, "config": str(config_path)}
        )
        con.execute("COMMIT")
    finally:
        con.close()
    was = f"was {previous[:12]}" if previous else "was unbound"
    return f"store {store_path} now belongs to org config {config.identity[:12]} ({config_path}); {was}"
