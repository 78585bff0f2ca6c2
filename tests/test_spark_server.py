"""`loyalty-bulk spark-server` and the Spark session: the local Sail server announces a free port on 127.0.0.1,
answers SQL and Delta reads and writes, stops with exit 0 on SIGTERM or Ctrl-C; a missing address or a missing
`spark` extra is a usage error (exit 2) that says what to do."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import CLI, ROOT
from pipeline.errors import EXIT_USAGE
from pipeline.spark.session import EXTRA_MISSING, SparkUsageError, require_spark, spark_remote, spark_session

ADDRESS = re.compile(r"listening on sc://127\.0\.0\.1:(\d+)")


def answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [str(CLI), "spark-server", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    assert server.stdout is not None
    return server, server.stdout.readline()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_spark_server_announces_a_free_port_on_loopback_and_stops_cleanly(stop):
    server, first = start("--port", "0")
    try:
        match = ADDRESS.fullmatch(first.rstrip("\n"))
        assert match, f"first line: {first!r}"
        port = int(match[1])
        assert port != 0 and answers(port)
    finally:
        began = time.monotonic()
        server.send_signal(stop)
        try:
            code = server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise
    assert code == 0 and time.monotonic() - began < 5
    assert not answers(port), "the port still answers after the server stopped"


def test_a_taken_port_is_a_usage_error(spark_remote):
    port = spark_remote.rpartition(":")[2]
    taken = subprocess.run([str(CLI), "spark-server", "--port", port], capture_output=True, text=True, timeout=60)
    assert taken.returncode == EXIT_USAGE and taken.stdout == ""
    assert f"cannot serve Spark Connect on 127.0.0.1:{port}" in taken.stderr and "--port 0" in taken.stderr


def test_the_fixture_server_answers_sql(spark_remote, spark):
    assert re.fullmatch(r"sc://127\.0\.0\.1:\d+", spark_remote)
    assert [row.asDict() for row in spark.sql("SELECT 1 AS x").collect()] == [{"x": 1}]


def test_a_delta_table_written_reads_back_the_same_rows(spark, tmp_path):
    path = str(tmp_path / "table")
    rows = [(1, "a", 2.5), (2, "b", None), (3, None, -1.0)]
    spark.createDataFrame(rows, "id BIGINT, name STRING, score DOUBLE").write.format("delta").save(path)
    assert (tmp_path / "table" / "_delta_log").is_dir()
    back = spark.read.format("delta").load(path)
    assert back.columns == ["id", "name", "score"]
    assert sorted(tuple(row) for row in back.collect()) == rows


def test_the_address_comes_from_the_option_else_spark_remote():
    env = {"SPARK_REMOTE": "sc://cluster:443"}
    assert spark_remote(None, env) == "sc://cluster:443"
    assert spark_remote("sc://127.0.0.1:15002", env) == "sc://127.0.0.1:15002"


def test_no_address_is_a_usage_error_naming_both_ways_to_give_one():
    with pytest.raises(SparkUsageError) as missing:
        spark_session(None, environ={})
    assert missing.value.exit_code == EXIT_USAGE
    assert "--spark-remote" in str(missing.value) and "SPARK_REMOTE" in str(missing.value)
    with pytest.raises(SparkUsageError, match="sc://HOST:PORT, not 'localhost:15002'"):
        spark_remote(None, {"SPARK_REMOTE": "localhost:15002"})


def test_a_missing_extra_is_a_usage_error_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pysail", None)  # what an install without the extra finds
    with pytest.raises(SparkUsageError) as missing:
        require_spark("pysail")
    assert str(missing.value).startswith(EXTRA_MISSING) and missing.value.exit_code == EXIT_USAGE
    assert "pip install 'loyalty-bulk[spark]'" in EXTRA_MISSING


def test_the_package_and_the_command_work_without_the_extra():
    """With pyspark and pysail unimportable, every module of the room but the Delta store imports, and
    `spark-server` exits 2 with the install hint rather than a traceback."""
    code = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys(['pyspark', 'pysail'], None))\n"
        "import pipeline.cli, pipeline.spark, pipeline.spark.server, pipeline.spark.session\n"
        "from pipeline.cli import main\n"
        "main(['spark-server', '--port', '0'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stdout == "" and EXTRA_MISSING in done.stderr and "Traceback" not in done.stderr


def test_a_session_opens_where_main_has_no_file(spark_remote):
    """`python -c` and pytest-xdist's workers have a `__main__` without a file, which pyspark's Connect client
    takes for its doctest runner (it would exit the process with 255): spark_session opens one all the same."""
    code = (
        "from pipeline.spark.session import spark_session\n"
        f"print(spark_session({spark_remote!r}).sql('SELECT 2 AS y').collect()[0].y)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr[-2000:]
