"""loyalty-bulk: batch identifier and card changes with the result of row-by-row API calls.

The package is a map of the architecture, from the ground floor up. A module imports its own floor and the
floors below it, never one above (tests/test_layout.py holds the same map and fails on a back-arrow):

    ground      errors, settings, faults, catalog (error codes), config (org config), files (atomic,
                spreadsheet-safe writers), results (RunResult, StoreCounts, LedgerEntry, StageClock)
    values/     one value's meaning: normalisation, mobiles with country rules, blocked patterns, spreadsheet damage
    input/      request files read into the batch frame (CSV, Parquet, NDJSON call bodies, Excel workbooks, a run's
                errors.csv, a job's layout)
    store/      the store file (DuckDB): schema of every table, open and migrate, transactions, snapshot init
                and export, invariants and audit, stored mobiles, the run ledger, the org-config binding
    engine/     a run's stages in order: check, resolve, decide (set-based), replay (sequential), apply,
                and the in-transaction undo log and provenance (the DuckDB engine; its SQL stays in here)
    reports/    success, errors and merges rows, the stager beside the transaction, summary.html, PII masking
    lineage/    provenance's actions, revert, explain and its page: "why" and "undo" from the store's record
    delivery/   after a run: the call plan, push (client, verdicts, journal, pacing), the platform emulator
    operations  run (composes the stages), job (a job file), validate (check without a store), refresh (a store
                brought to the platform's next snapshot)
    spark/      the Spark engine (optional extra `spark`): the Spark Connect session, the local Sail server, the
                store as Delta tables and runs on it; the only room that imports pyspark, and only lazily
    tools/      the sample-data generator, `make demo`
    face        cli (parse, call one function, print, exit), console, __main__
"""

import os

# numpy starts an OpenBLAS thread pool per core at import, whose threads poll for work; nothing here
# calls BLAS, so one thread is enough (measured: 0.2-0.3 CPU-seconds of the 1M-row benchmark run otherwise).
# Set before numpy is first imported, which happens below this package; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
