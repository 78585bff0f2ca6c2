"""input: request files (CSV, Parquet, NDJSON of call bodies) read into the batch frame, with a job's layout,
refused as a whole with file, line and field when they cannot be read. Imports values and the ground floor."""
