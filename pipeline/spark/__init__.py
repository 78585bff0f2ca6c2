"""The Spark engine (SPEC section 10): a store as Delta tables, read and written through Spark Connect.

The room owns everything Spark: the session (session.py: the Spark Connect address from --spark-remote or
SPARK_REMOTE), the local Sail server that serves Spark Connect without a JVM (server.py, `loyalty-bulk
spark-server`, which the tests use), and the Delta store (delta.py) with runs on it (run.py).

pyspark and pysail come with the optional extra `spark` (pip install 'loyalty-bulk[spark]'). Only this room
imports them, and only inside functions (or for type checking), so that `import pipeline` and every command of
the DuckDB engine work without the extra; `require_spark` turns a missing extra into a usage error (exit 2).
"""
