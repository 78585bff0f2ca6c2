"""The stored mobiles and the `[mobile]` countries they were read with (store_meta), and re-reading them when a
store's org config changes its countries (`store set-config`, store/binding.py).
"""

from __future__ import annotations

import duckdb
import polars as pl

from pipeline.config import MobileCountries
from pipeline.store.duck import query_frame
from pipeline.store.schema import value_hash

MOBILE_COUNTRIES_KEY = "mobile_countries"
"""store_meta key: the `[mobile]` countries the stored mobiles were read with; empty or absent: plain rule."""


DISTINCT_MOBILES_SQL = "SELECT DISTINCT id_value FROM identifiers WHERE id_type = 'mobile'"


RENORMALISE_MOBILES_SQL = f"""
UPDATE identifiers SET id_value = m.normalised, value_hash = {value_hash("identifiers.id_type", "m.normalised")}
FROM mobile_changes m
WHERE identifiers.id_type = 'mobile' AND identifiers.id_value = m.value
"""


def mobile_changes(con: duckdb.DuckDBPyConnection, countries: MobileCountries) -> pl.DataFrame:
    """Distinct stored mobiles whose normalisation with the countries differs: value, normalised."""
    from pipeline.values.mobile import normalised_mobiles

    values = query_frame(con, DISTINCT_MOBILES_SQL).get_column("id_value")
    table = normalised_mobiles(values.cast(pl.String), countries, distinct=True)
    return table.filter(pl.col("normalised") != pl.col("value")).select("value", "normalised")


def read_stored_mobiles(con: duckdb.DuckDBPyConnection, countries: MobileCountries) -> int:
    """Re-normalise the store's mobiles with the countries, inside the caller's transaction.

    Returns how many distinct values changed. Uniqueness in scope is the caller's to check after.
    """
    changes = mobile_changes(con, countries)
    if changes.height:
        con.register("mobile_changes", changes)
        try:
            con.execute(RENORMALISE_MOBILES_SQL)
        finally:
            con.unregister("mobile_changes")
    con.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [MOBILE_COUNTRIES_KEY, countries.key])
    return changes.height


def stored_mobile_countries(con: duckdb.DuckDBPyConnection) -> str:
    """The countries the store's mobiles were read with ('' for the plain rule, as for older stores)."""
    rows = con.execute("SELECT value FROM store_meta WHERE key = ?", [MOBILE_COUNTRIES_KEY]).fetchall()
    return rows[0][0] if rows else ""
