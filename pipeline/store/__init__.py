"""store: everything written in the store file (one DuckDB database): the schema of every table, opening and
migrating, transactions, snapshot init and export, the invariants and their audit, stored mobiles, the run
ledger and the org-config binding. DuckDB-specific: a second storage backend would be a sibling of this room.
Imports input (types of the files a run records), values and the ground floor."""
