"""SPEC section 3 step 3's order of checks, written once: the set-based SQL and the replay both follow it.

Each operation is a list of checks in the order the SPEC reads them; each check ends the row with an
error code, or, for the `unchanged` entries, with a success that skips every later check. decide.py's
CASE expressions and replay.py's branches are two forms of these lists; tests/test_rules.py reads both
(and the model's, tests/model.py) and asserts they follow them. The statuses and warnings the SQL
needs come from here, from the config's status sets and the catalog's codes, as registered tables
and parameters (`register`, `WARNING_PARAMS`), never as literals of their own.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import duckdb
import polars as pl

from pipeline.catalog import CATALOG, already_present_code
from pipeline.config import ACTIVE_STATUSES, CARD, CLOSED_STATUSES, ID_TYPES, OrgConfig

Ends = Literal["error", "unchanged"]


class Check(NamedTuple):
    code: int
    """The error code, or for an `unchanged` entry its warning (8070 standing for 8070-8073)."""
    step: str
    """Where SPEC section 3 says it: step 3, the operation, and the sub-step where it numbers them."""
    ends: Ends = "error"


ADD_IDENTIFIER: tuple[Check, ...] = (
    Check(8070, "3 add T=V, 1: C already holds (S, T, V)", "unchanged"),
    Check(7006, "3 add T=V, 2: C holds another value of T in S"),
    Check(8008, "3 add T=V, 3: a LOYALTY holder in S"),
    Check(8068, "3 add T=V, 3: a CAMPAIGN holder, reuse off"),
    Check(8074, "3 add T=V, 3: two or more LOYALTY holders elsewhere"),
    Check(7007, "3 add T=V, 4: merge needed, merging disabled"),
    Check(8066, "3 add T=V, 4: the scopes of C and S meet D's"),
    Check(7008, "3 add T=V, 4: D survived max_merges_per_survivor_per_run"),
)
REPLACE_IDENTIFIER: tuple[Check, ...] = (
    Check(7009, "3 replace T=V: a call line's removed value W is not C's in S (section 2, NDJSON)"),
    Check(8070, "3 replace T=V: C already holds (S, T, V), as add step 1", "unchanged"),
    Check(8008, "3 replace T=V: V checked as add step 3 (C's other value W of T in S gone): a LOYALTY holder in S"),
    Check(8068, "3 replace T=V: as add step 3, a CAMPAIGN holder, reuse off"),
    Check(8074, "3 replace T=V: as add step 3, two or more LOYALTY holders elsewhere"),
    Check(7007, "3 replace T=V: as add step 4, merge needed, merging disabled"),
    Check(8066, "3 replace T=V: as add step 4, the scopes of C and S meet D's"),
    Check(7008, "3 replace T=V: as add step 4, D survived max_merges_per_survivor_per_run"),
)
"""A replace is an add whose step 2 (7006) removes C's other value W of T in S instead, in the same change; a
row read from a call line also names W, which C must hold (7009, before anything else)."""
REMOVE_IDENTIFIER: tuple[Check, ...] = (
    Check(7009, "3 remove T=V: C does not hold (S, T, V)"),
    Check(7010, "3 remove T=V: C's last identifier"),
)
CARD_LINK: tuple[Check, ...] = (
    Check(3010, "3 add cardnumber: not in the store"),
    Check(3000, "3 add cardnumber: another series"),
    Check(8087, "3 add cardnumber: EXPIRED or DELETED"),
    Check(3012, "3 add cardnumber: held by C (same label: unchanged; another: relabelled)", "unchanged"),
    Check(3027, "3 add cardnumber: held by another customer"),
    Check(3036, "3 add cardnumber: C's active cards of the series at its maximum"),
    Check(3039, "3 add cardnumber: C's active cards at the org maximum"),
)
CARD_DELINK: tuple[Check, ...] = (
    Check(3010, "3 remove cardnumber: not in the store"),
    Check(8087, "3 remove cardnumber: EXPIRED or DELETED"),
    Check(3031, "3 remove cardnumber: not held by C"),
)
OPERATIONS: dict[str, tuple[Check, ...]] = {
    "add identifier": ADD_IDENTIFIER,
    "replace identifier": REPLACE_IDENTIFIER,
    "remove identifier": REMOVE_IDENTIFIER,
    "card link": CARD_LINK,
    "card delink": CARD_DELINK,
}


def _code(name: str) -> int:
    return next(code for code, entry in CATALOG.items() if entry.name == name)


WARNING_PARAMS: dict[str, int] = {
    "w_followed_merge": _code("FOLLOWED_MERGE"),
    "w_merged": _code("MERGED"),
    "w_campaign_dropped": _code("CAMPAIGN_HOLDER"),
    "w_card_present": already_present_code(CARD),
}
"""The warnings decide.py's SQL adds, as its parameters (each statement takes the ones it names)."""


def register(con: duckdb.DuckDBPyConnection, config: OrgConfig) -> None:
    """The config's card labels and series, and the catalog's 'already present' warnings, as small tables.

    cfg_labels carries each label's status with the `active` and `closed` flags of config.ACTIVE_STATUSES
    and CLOSED_STATUSES, so the SQL counts and refuses cards by the same sets as the replay.
    """
    labels = pl.DataFrame(
        {
            "label": list(config.card_labels),
            "status": list(config.card_labels.values()),
            "active": [s in ACTIVE_STATUSES for s in config.card_labels.values()],
            "closed": [s in CLOSED_STATUSES for s in config.card_labels.values()],
        },
        schema={"label": pl.String, "status": pl.String, "active": pl.Boolean, "closed": pl.Boolean},
    )
    series = pl.DataFrame(
        {
            "series_id": [s.id for s in config.card_series.values()],
            "max_active": [s.max_active_per_customer for s in config.card_series.values()],
        },
        schema={"series_id": pl.Int64, "max_active": pl.Int64},
    )
    types = sorted(ID_TYPES - {CARD})
    present = pl.DataFrame(
        {"id_type": types, "code": [already_present_code(t) for t in types]},
        schema={"id_type": pl.String, "code": pl.Int32},
    )
    for table, frame in (("cfg_labels", labels), ("cfg_series", series), ("cfg_present", present)):
        con.register("cfg_frame", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM cfg_frame")
        con.unregister("cfg_frame")
