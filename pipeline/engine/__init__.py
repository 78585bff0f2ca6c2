"""The engine: one module per stage of a run, in this order (README "How it works").

workspace (the run's temp tables and the handles stages pass), rules (SPEC section 3's order of
checks, which decide and replay follow), check, resolve, decide (set-based), replay (sequential),
apply, result (RunResult), batch (the entry that composes check to replay). A module imports only modules
before it in this order, never a later stage nor the orchestrator, pipeline/run.py.
"""
