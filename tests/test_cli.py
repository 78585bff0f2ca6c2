"""The command line of SPEC section 6: help text everywhere, the version, exit codes and their messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import pipeline
from pipeline.cli import main

ROOT = Path(__file__).resolve().parent.parent
ORG = ROOT / "tests" / "cases" / "org-plain.toml"
HEADER = "customer_id,source,action,id_type,id_value\n"


def command_paths(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group under `command`, with the words that invoke it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from command_paths(sub, (*path, name))


COMMANDS = list(command_paths(main))


def invoke(*args: str | Path | int) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text(header + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_the_tree_has_the_commands_of_the_spec():
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"validate", "run", "store", "store init", "store export"} <= paths


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "main" for p, _ in COMMANDS])
def test_every_command_has_help(path: tuple[str, ...], command: click.Command):
    assert command.help and command.help.strip(), f"{' '.join(path) or 'main'} has no docstring/help"
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:")
    first_line = " ".join(command.help.strip().splitlines()[0].split())
    assert first_line in " ".join(result.output.split())  # click wraps long lines


def test_group_help_lists_its_commands():
    result = invoke("--help")
    for name, command in main.commands.items():
        assert name in result.output
        assert command.get_short_help_str(limit=300)[:20] in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert version("loyalty-bulk") in result.output
    assert pipeline.__version__ == version("loyalty-bulk")


def test_unknown_command_is_a_usage_error():
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


def test_python_dash_m_pipeline_help(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert main.help is not None and main.help.splitlines()[0] in done.stdout
    assert "validate" in done.stdout


def test_installed_console_script_runs(tmp_path: Path):
    script = Path(sys.executable).parent / "loyalty-bulk"
    if not script.exists():
        pytest.skip("loyalty-bulk is not installed next to this interpreter")
    done = subprocess.run([str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert version("loyalty-bulk") in done.stdout


def test_validate_all_rows_pass_exits_0(tmp_path: Path):
    requests = write_csv(
        tmp_path / "ok.csv", "1001,INSTORE,add,email,x@y.co", "1002,INSTORE,remove,mobile,+33 6 12 34 56 78"
    )
    result = invoke("validate", "--config", ORG, "--reports", tmp_path / "reports", requests)
    assert result.exit_code == 0, result.output
    assert "checked 2 row(s) in 1 file(s): 2 passed, 0 failed" in result.stdout
    assert result.stderr == ""
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert (summary["rows"], summary["rows_failed"], summary["exit_code"]) == (2, 0, 0)


def test_validate_failing_row_exits_1(tmp_path: Path):
    requests = write_csv(tmp_path / "bad.csv", "1001,INSTORE,add,email,x@y.co", "1002,INSTORE,add,email,not-an-email")
    result = invoke("validate", "--config", ORG, "--reports", tmp_path / "reports", requests)
    assert result.exit_code == 1, result.output
    assert "1 passed, 1 failed" in result.stdout
    assert "8055 INVALID_EMAIL: 1" in result.stdout
    assert (tmp_path / "reports" / "errors.csv").exists()


def test_validate_broken_config_exits_2(tmp_path: Path):
    config = tmp_path / "org.toml"
    config.write_text(
        ORG.read_text(encoding="utf-8").replace('"Blocked" = "SUSPENDED"', '"Blocked" = "BLOCKED"'), encoding="utf-8"
    )
    requests = write_csv(tmp_path / "ok.csv", "1001,INSTORE,add,email,x@y.co")
    result = invoke("validate", "--config", config, "--reports", tmp_path / "reports", requests)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {config}: key 'card_labels.Blocked': 'BLOCKED' is not a standard status")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists()


def test_validate_missing_required_option_exits_2(tmp_path: Path):
    result = invoke("validate", write_csv(tmp_path / "ok.csv", "1001,INSTORE,add,email,x@y.co"))
    assert result.exit_code == 2
    assert "give --config (or --job, whose config is used)" in result.output


def test_validate_unknown_column_exits_3(tmp_path: Path):
    requests = write_csv(
        tmp_path / "cols.csv",
        "1001,INSTORE,add,email,x@y.co,hello",
        header="customer_id,source,action,id_type,id_value,comment\n",
    )
    result = invoke("validate", "--config", ORG, "--reports", tmp_path / "reports", requests)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"error: {requests}, line 1: unknown column 'comment'")
    assert "nothing was applied" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sample_then_store_init_then_run(tmp_path: Path):
    out = tmp_path / "sample"
    result = invoke("sample", "--out", out, "--customers", 50, "--rows", 100, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert f"sample written to {out}" in result.stdout

    store = tmp_path / "store.duckdb"
    result = invoke("store", "init", store, "--snapshot", out / "snapshot")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"store {store}: 50 customers")

    reports = tmp_path / "reports"
    result = invoke("run", "--store", store, "--config", out / "org.toml", "--reports", reports, out / "requests.csv")
    assert result.exit_code == 1, result.output
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["exit_code"] == result.exit_code
    assert "100 rows" in result.stdout

    result = invoke("store", "export", store, tmp_path / "export", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "export").iterdir()} >= {"customers.csv", "identifiers.csv", "cards.csv"}


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("target", "args"),
    [
        pytest.param("pipeline.validate.validate_files", ("validate", "--config", ORG, "{tmp}/x.csv"), id="validate"),
        pytest.param(
            "pipeline.tools.sample.generate_sample",
            ("sample", "--out", "{tmp}/s", "--customers", "5", "--rows", "5"),
            id="sample",
        ),
        pytest.param(
            "pipeline.store.snapshot.init_store",
            ("store", "init", "{tmp}/s.duckdb", "--snapshot", "{tmp}"),
            id="store-init",
        ),
        pytest.param(
            "pipeline.run.run_batch",
            ("run", "--store", "{tmp}/s.duckdb", "--config", ORG, "--reports", "{tmp}/r", "{tmp}/x.csv"),
            id="run",
        ),
    ],
)
def test_unexpected_exception_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, args: tuple[str, ...]
):
    monkeypatch.setattr(target, _boom)
    result = invoke(*(str(a).format(tmp=tmp_path) for a in args))
    assert result.exit_code == 4, result.output
    assert result.stderr == "internal error: RuntimeError: boom; nothing was applied\n"


def test_a_command_does_not_load_hypothesis(tmp_path):
    """Pandera imports hypothesis whenever it is installed (it is, with the test extra); a command never needs it."""
    files = [str(p) for p in sorted((ROOT / "sample_data" / "requests").glob("*.csv"))]
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "try:\n"
        f'    main(["validate", "--config", {str(ROOT / "tests" / "cases" / "org-plain.toml")!r},'
        f' "--reports", {str(tmp_path / "r")!r}, *{files!r}])\n'
        "except SystemExit as done:\n"
        "    print('exit', done.code)\n"
        "print('pandera checked', 'pandera.backends.polars' in sys.modules)\n"
        "print('hypothesis loaded', sys.modules.get('hypothesis') is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pandera checked True" in out, out
    assert "hypothesis loaded False" in out, out
