"""The rows' connected components: rows joined by a shared key (a customer, a value, a card) fall into one
component, and nothing a row of one component reads or writes is reached by a row of another.

Resolve computes them while the row keys exist (`row_keys`); the replay shares its work out by component
(components.py), and the call plan (delivery/plan.py) orders each component's calls by them, so components need
no order between them.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from pipeline.store.duck import query_frame

GROUPS_SCHEMA = {"seq": pl.Int64, "plan_group": pl.Int64, "plan_fresh": pl.Boolean}
"""Per interacting row: its component and whether it shares no key with any earlier row."""


_SHARED_KEY_EDGES = """
WITH shared AS (SELECT k, min(seq) AS first_seq FROM row_keys GROUP BY k HAVING min(seq) < max(seq))
SELECT DISTINCT r.seq, r.k, s.first_seq FROM row_keys r JOIN shared s USING (k)
"""


def plan_groups(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Component and freshness of every row that shares a key with another (`row_keys` of resolve).

    `plan_group` numbers the connected components of rows joined by shared keys (in the order of each
    component's first row); `plan_fresh` says the row shares no key with any earlier row. Components
    come from `component_roots` over the bipartite row-key graph (set-based, no Python loop over rows).
    """
    edges = query_frame(con, _SHARED_KEY_EDGES)
    if edges.height == 0:
        return pl.DataFrame(schema=GROUPS_SCHEMA)
    edges = edges.with_columns(
        pl.col("seq").rank("dense").cast(pl.Int64).alias("row_node") - 1,
        pl.col("k").rank("dense").cast(pl.Int64).alias("key_node") - 1,
    )
    rows, keys = edges["seq"].n_unique(), edges["k"].n_unique()
    roots = component_roots(rows + keys, edges["row_node"].to_numpy(), edges["key_node"].to_numpy() + rows)
    # every component holds a row (each edge has one), so its root, its smallest node, is a row node
    labels = pl.Series("plan_group", roots[:rows]).rank("dense").cast(pl.Int64) - 1
    per_row = edges.group_by("seq", "row_node").agg((pl.col("first_seq") == pl.col("seq")).all().alias("plan_fresh"))
    return per_row.select("seq", labels.gather(per_row["row_node"]), "plan_fresh").sort("seq")


def component_roots(nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of `nodes` nodes joined by the undirected edges a[i]-b[i], the smallest node of its component.

    Hook and compress, in whole-array steps (no Python loop over nodes or edges): each round hangs every
    edge's larger root under its smaller one, then points every node at its root by pointer jumping. A
    parent is never larger than its node, roots only decrease, and a round that leaves an edge's two ends
    under different roots merges at least one pair of components, so the loop ends, after rounds
    logarithmic in practice; it stops when both ends of every edge have the same root.
    """
    parent = np.arange(nodes, dtype=np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        if np.array_equal(ra, rb):
            return parent
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
