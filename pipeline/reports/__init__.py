"""reports: what a run writes for people: the rows of success, errors and merges, the stager that writes them
beside the transaction, summary.html, and PII masking. Imports the engine (the decided rows' types), input,
values and the ground floor."""
