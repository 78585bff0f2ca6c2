"""engine: one module per stage of a run, in this order (docs/how-it-works.md).

workspace (the run's temp tables and the handles stages pass), rules (the order of checks, which decide and
replay follow), check, groups (the rows' connected components, for the replay and the call plan), resolve,
decide (set-based), replay (sequential), components (the replay split over processes), batch (the entry that
composes check to replay), apply, record (the undo log and provenance), commit (apply and record in the run's
transaction). A module imports only modules before it in this order, never a later stage nor the orchestrator
(pipeline/run.py). The SQL here is DuckDB's: a second engine backend would be a sibling of this room that keeps
rules.py's order and the replay's code.
"""
