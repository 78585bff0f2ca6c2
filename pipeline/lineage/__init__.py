"""lineage: answers "why" and "undo" from what the store recorded: provenance's actions, revert (playing an
undo log backwards), explain and its HTML page. Imports reports, store, values and the ground floor; never the
engine."""
