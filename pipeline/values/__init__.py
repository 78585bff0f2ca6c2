"""values: what one identifier value means: trimming and normalisation per id_type, mobiles read with a
country's rules, the blocked-pattern language. Imports the ground floor only."""
