"""loyalty-bulk: batch identifier and card changes with the result of row-by-row API calls."""

__version__ = "0.1.0"
