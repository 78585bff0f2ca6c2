"""tools: the sample-data generator and `make demo`. May import everything but the command line."""
