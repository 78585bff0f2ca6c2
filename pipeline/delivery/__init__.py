"""delivery: everything after a run: the call plan (calls.ndjson), push to the platform (client, verdicts,
journal, pacing, push report) and the local emulator of the platform; both speak the API as platform.py spells
it. Imports every room below it; push itself imports no data library (no duckdb, pandera or polars at import)."""
