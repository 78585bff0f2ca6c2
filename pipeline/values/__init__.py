"""values: what one identifier value means: trimming and normalisation per id_type, mobiles read with a
country's rules, the blocked-pattern language, the long numbers a spreadsheet changed (spreadsheet.py).
Imports the ground floor only."""
