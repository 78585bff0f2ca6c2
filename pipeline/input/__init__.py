"""input: request files (CSV, Parquet, NDJSON of call bodies, Excel workbooks: workbook.py; a run's errors.csv)
read into the batch frame, with a job's layout, refused as a whole with file, line and field when they cannot be
read; and a call (calls.py: a call body, a line of calls.ndjson), read without a data library so push can use it.
Imports values and the ground floor."""
