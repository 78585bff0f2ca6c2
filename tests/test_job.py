"""Job files: parsing and refusals, input globs, command-line precedence, the platform layouts, thresholds,
the sample jobs in jobs/ and the default reports folder."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import pipeline.job as job_module
from conftest import ORG, ROOT, exported
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.job import JobOverrides, load_job, run_job
from pipeline.store.snapshot import init_store

SAMPLE_ORG = ROOT / "sample_data" / "org.toml"
REQUESTS = ROOT / "sample_data" / "requests"
JOBS = ROOT / "jobs"

DATA_IMPORT_COLUMNS = """
[columns]
"User ID" = "customer_id"
"Source" = "source"
"Account ID" = "account_id"
"Identifier Type" = "id_type"
"Identifier Value" = "id_value"
"Action" = "action"
"""
CARD_IMPORT_COLUMNS = """
[columns]
"Card Number" = "id_value"
"Card Series Code" = "series_id"
"Card Status Label" = "status_label"
"User Id" = "customer_id"
"Card Expiry Date" = "-"
"Issued Date" = "-"

[fixed]
action = "add"
id_type = "cardnumber"
source = "INSTORE"
"""


@pytest.fixture
def sample_store(tmp_path) -> Path:
    """The store the sample jobs expect: made with `store init --config sample_data/org.toml`."""
    path = tmp_path / "store.duckdb"
    init_store(path, ROOT / "sample_data" / "snapshot", countries=load_config(SAMPLE_ORG).mobile)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def job_file(
    tmp_path: Path, store: Path | str, inputs: list[str], extra: str = "", tables: str = "", name: str = "job.toml"
) -> Path:
    """A job file in tmp_path with absolute store, config and input paths."""
    listed = ", ".join(json.dumps(str(entry)) for entry in inputs)
    return write(
        tmp_path / name,
        f"[job]\nstore = {json.dumps(str(store))}\nconfig = {json.dumps(str(ORG))}\n"
        f"inputs = [{listed}]\n{extra}\n{tables}",
    )


def invoke(*args: str | Path):
    return CliRunner().invoke(main, ["job", *map(str, args)])


def report(folder: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(folder / name, infer_schema=False)


def test_a_minimal_job_gets_the_defaults(tmp_path):
    job = load_job(job_file(tmp_path, "s.duckdb", [str(REQUESTS / "01_identifiers.csv")], name="nightly.toml"))
    assert job.name == "nightly"
    assert job.store == str(tmp_path / "s.duckdb") and job.config == str(ORG)
    assert job.inputs == (str(REQUESTS / "01_identifiers.csv"),)
    assert (job.reports, job.dry_run, job.allow_reapply, job.parquet_reports, job.mask_pii) == (
        None,
        False,
        False,
        False,
        False,
    )
    assert (job.max_errors, job.max_error_rate, job.memory_limit, job.threads, job.workers) == (None,) * 5
    assert (dict(job.columns), dict(job.fixed), job.series_by_code) == ({}, {}, False)


def test_relative_paths_are_taken_from_the_job_files_folder(tmp_path):
    write(tmp_path / "data" / "a.csv", "x")
    path = write(
        tmp_path / "jobs" / "j.toml",
        '[job]\nstore = "../store.duckdb"\nconfig = "../org.toml"\ninputs = ["../data/*.csv"]\n'
        'reports = "../out/{job}/{run_id}"\n',
    )
    job = load_job(path)
    assert job.store == str(tmp_path / "store.duckdb") and job.config == str(tmp_path / "org.toml")
    assert job.inputs == (str(tmp_path / "data" / "a.csv"),)
    assert job.reports == str(tmp_path / "out" / "{job}" / "{run_id}")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nmax_erors = 3\n', "job.max_erors"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\n[cards]\nseries_by_code = true\n', "cards"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\n[fixed]\nchannel = "x"\n', "fixed.channel"),
        (
            '[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\n[columns]\n"User ID" = "user"\n',
            'columns."User ID"',
        ),
        (
            '[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\n[columns]\n" User ID" = "customer_id"\n',
            'columns." User ID"',
        ),
        (
            '[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\n'
            '[columns]\n"Op" = "action"\n[fixed]\naction = "add"\n',
            "fixed.action",
        ),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nmax_error_rate = 1.5\n', "job.max_error_rate"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nmax_errors = -1\n', "job.max_errors"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\ndry_run = "yes"\n', "job.dry_run"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nthreads = 0\n', "job.threads"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nworkers = 0\n', "job.workers"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nname = "a/b"\n', "job.name"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}"]\nreports = "r/{{date}}"\n', "job.reports"),
        ('[job]\nconfig = "c"\ninputs = ["{input}"]\n', "job.store"),
        ('[job]\nstore = "s"\ninputs = ["{input}"]\n', "job.config"),
        ('[job]\nstore = "s"\nconfig = "c"\n', "job.inputs"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = []\n', "job.inputs"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["{input}", "nowhere/*.csv"]\n', "job.inputs[1]"),
        ('[job]\nstore = "s"\nconfig = "c"\ninputs = ["missing.csv"]\n', "job.inputs[0]"),
        ('store = "s"\n', "store"),
        ("[job\n", "(file)"),
    ],
)
def test_a_broken_job_file_is_refused_naming_the_key(tmp_path, body, key):
    path = write(tmp_path / "bad.toml", body.format(input=str(REQUESTS / "01_identifiers.csv").replace("\\", "/")))
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert caught.value.key == key
    result = invoke(path)
    assert result.exit_code == 2, result.output
    assert f"key '{key}'" in result.output and str(path) in result.output


def test_a_missing_job_file_is_exit_2(tmp_path):
    result = invoke(tmp_path / "none.toml")
    assert result.exit_code == 2 and "cannot read the job file" in result.output


def test_globs_are_sorted_and_inputs_keep_the_listed_order(tmp_path):
    for name in ("b.csv", "a.csv", "c.csv", "z.csv", "notes.txt"):
        write(tmp_path / "in" / name, "x")
    job = load_job(
        job_file(
            tmp_path,
            "s.duckdb",
            [str(tmp_path / "in" / "z.csv"), str(tmp_path / "in" / "*.csv"), str(tmp_path / "in" / "notes.txt")],
        )
    )
    assert [Path(p).name for p in job.inputs] == ["z.csv", "a.csv", "b.csv", "c.csv", "notes.txt"]


def captured_run(monkeypatch) -> dict:
    """Replace run_batch in the job module by a recorder of its arguments."""
    seen: dict = {}

    def fake_run_batch(store, config, files, reports_dir, options):
        seen.update(store=store, config=config, files=files, reports=reports_dir, options=options)
        return type(
            "Result",
            (),
            {
                "exit_code": 0,
                "state": "applied",
                "render": lambda self, **_: "ok",
                "to_dict": lambda self: {},
                "failed": 0,
                "aborted": None,
                "reports_dir": str(reports_dir),
            },
        )()

    monkeypatch.setattr(job_module, "run_batch", fake_run_batch)
    return seen


def test_precedence_is_flag_then_environment_then_job_file(tmp_path, monkeypatch):
    seen = captured_run(monkeypatch)
    monkeypatch.delenv("LOYALTY_BULK_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("LOYALTY_BULK_THREADS", raising=False)
    monkeypatch.delenv("LOYALTY_BULK_WORKERS", raising=False)
    path = job_file(
        tmp_path,
        tmp_path / "s.duckdb",
        [str(REQUESTS / "01_identifiers.csv")],
        'memory_limit = "1GB"\nthreads = 3\nworkers = 5\nmax_errors = 5\nmax_error_rate = 0.2\ndry_run = true\n',
    )
    run_job(path)
    opts = seen["options"]
    assert opts.workers == 5
    assert (opts.memory_limit, opts.threads, opts.max_errors, opts.max_error_rate, opts.dry_run) == (
        "1GB",
        3,
        5,
        0.2,
        True,
    )
    assert opts.job == "job" and seen["store"] == str(tmp_path / "s.duckdb")

    monkeypatch.setenv("LOYALTY_BULK_MEMORY_LIMIT", "3GB")
    monkeypatch.setenv("LOYALTY_BULK_THREADS", "4")
    monkeypatch.setenv("LOYALTY_BULK_WORKERS", "6")
    run_job(path)
    assert (seen["options"].memory_limit, seen["options"].threads, seen["options"].workers) == ("3GB", 4, 6)

    result = invoke(
        path,
        "--memory-limit",
        "4GB",
        "--threads",
        "2",
        "--workers",
        "7",
        "--max-errors",
        "9",
        "--max-error-rate",
        "0.5",
        "--no-dry-run",
        "--store",
        tmp_path / "other.duckdb",
        "--reports",
        tmp_path / "r" / "{job}",
    )
    assert result.exit_code == 0, result.output
    opts = seen["options"]
    assert opts.workers == 7
    assert (opts.memory_limit, opts.threads, opts.max_errors, opts.max_error_rate, opts.dry_run) == (
        "4GB",
        2,
        9,
        0.5,
        False,
    )
    # the store comes as given (a string: a Delta store may be a URI, which a Path would mangle)
    assert Path(seen["store"]) == tmp_path / "other.duckdb" and seen["reports"] == tmp_path / "r" / "job"


def test_dry_run_flag_overrides_the_job_file(tmp_path, monkeypatch):
    seen = captured_run(monkeypatch)
    path = job_file(tmp_path, "s.duckdb", [str(REQUESTS / "01_identifiers.csv")])
    assert invoke(path).exit_code == 0 and seen["options"].dry_run is False
    assert invoke(path, "--dry-run").exit_code == 0 and seen["options"].dry_run is True


def test_data_import_layout_with_a_fixed_action(store, tmp_path):
    data = write(
        tmp_path / "export.csv",
        "User ID,Source,Account ID,Identifier Type,Identifier Value\n"
        "1025,FACEBOOK,,email,Grace@Example.com\n"
        "1021,WECHAT,WX-CN2,wechat,wx_1021\n"
        "1099,INSTORE,,email,ghost@example.com\n",
    )
    columns = DATA_IMPORT_COLUMNS.replace('"Action" = "action"\n', "") + '\n[fixed]\naction = "add"\n'
    result = run_job(job_file(tmp_path, store, [str(data)], tables=columns), JobOverrides(reports=tmp_path / "r"))
    assert result.exit_code == 1 and result.outcomes["applied"] == 2
    success = report(tmp_path / "r", "success.csv")
    assert success.select(
        "row_number", "customer_id", "action", "source", "account_id", "id_type", "id_value"
    ).rows() == [
        ("1", "1025", "add", "FACEBOOK", "", "email", "grace@example.com"),
        ("2", "1021", "add", "WECHAT", "WX-CN2", "wechat", "wx_1021"),
    ]
    errors = report(tmp_path / "r", "errors.csv")
    assert errors.select("row_number", "customer_id", "action", "error_code").rows() == [("3", "1099", "add", "8015")]


def test_data_import_layout_with_an_action_column(store, tmp_path):
    data = write(
        tmp_path / "export.csv",
        "User ID,Source,Account ID,Identifier Type,Identifier Value,Action\n"
        "1018,LINE,,mobile,8613800000018,REMOVE\n"
        "1027,INSTORE,,email,henry@example.com,ADD\n"
        "1014,MOBILE_APP,,externalId,APP-1014-B,ADD\n",
    )
    result = run_job(
        job_file(tmp_path, store, [str(data)], tables=DATA_IMPORT_COLUMNS), JobOverrides(reports=tmp_path / "r")
    )
    assert result.exit_code == 1 and result.outcomes["applied"] == 2 and result.errors_by_code == {7006: 1}
    errors = report(tmp_path / "r", "errors.csv")
    assert errors.columns[:14] == [
        "file",
        "row_number",
        "row_id",
        "customer_id",
        "lookup_type",
        "lookup_value",
        "source",
        "account_id",
        "action",
        "id_type",
        "id_value",
        "series_id",
        "status_label",
        "error_code",
    ]
    assert errors.select("customer_id", "action", "id_value").rows() == [("1014", "ADD", "APP-1014-B")]


def test_card_import_layout_translates_series_codes(store, tmp_path):
    data = write(
        tmp_path / "cards.csv",
        "Card Number,Card Series Code,Card Status Label,Card Expiry Date,Issued Date,User Id\n"
        "GLD0000000003,GOLD,Active,2028-11-30,2025-11-20,1017\n"
        "SLV00000004X, SILVER ,Issued,2027-11-30,2025-11-20,1023\n"
        "PLT0000000001,PLATINUM,Active,2028-11-30,2025-11-20,1024\n"
        "GLD0000000004,101,Active,2028-11-30,2025-11-20,1024\n"
        "GLD0000000004,gold,Active,2028-11-30,2025-11-20,1024\n",
    )
    path = job_file(tmp_path, store, [str(data)], extra="series_by_code = true", tables=CARD_IMPORT_COLUMNS)
    result = run_job(path, JobOverrides(reports=tmp_path / "r"))
    assert result.exit_code == 1 and result.outcomes["applied"] == 2 and result.errors_by_code == {3004: 3}
    success = report(tmp_path / "r", "success.csv")
    assert success.select("id_value", "resolved_customer_id", "outcome").rows() == [
        ("GLD0000000003", "1017", "applied"),
        ("SLV00000004X", "1023", "applied"),
    ]
    errors = report(tmp_path / "r", "errors.csv")
    assert "Card Expiry Date" not in errors.columns and "Issued Date" not in errors.columns
    assert errors.select(
        "row_number", "series_id", "error_code", "error_field", "action", "id_type", "source"
    ).rows() == [
        ("3", "PLATINUM", "3004", "series_id", "add", "cardnumber", "INSTORE"),
        ("4", "101 (unknown series code)", "3004", "series_id", "add", "cardnumber", "INSTORE"),
        ("5", "gold", "3004", "series_id", "add", "cardnumber", "INSTORE"),
    ]
    assert "'PLATINUM'" in errors["error_message"][0]


def test_without_series_by_code_a_code_is_an_unknown_series(store, tmp_path):
    data = write(
        tmp_path / "cards.csv",
        "Card Number,Card Series Code,Card Status Label,Card Expiry Date,Issued Date,"
        "User Id\nGLD0000000003,GOLD,Active,,,1017\n",
    )
    result = run_job(
        job_file(tmp_path, store, [str(data)], tables=CARD_IMPORT_COLUMNS), JobOverrides(reports=tmp_path / "r")
    )
    assert result.errors_by_code == {3004: 1}


def test_ignored_parquet_columns_may_have_any_type(store, tmp_path):
    import datetime

    data = tmp_path / "cards.parquet"
    pl.DataFrame(
        {
            "Card Number": ["GLD0000000003"],
            "Card Series Code": ["GOLD"],
            "Card Status Label": ["Active"],
            "Card Expiry Date": [datetime.date(2028, 11, 30)],
            "Issued Date": [datetime.date(2025, 11, 20)],
            "User Id": [1017],
        }
    ).write_parquet(data)
    path = job_file(tmp_path, store, [str(data)], extra="series_by_code = true", tables=CARD_IMPORT_COLUMNS)
    assert run_job(path, JobOverrides(reports=tmp_path / "r")).exit_code == 0


def test_a_file_that_has_a_fixed_column_is_refused(store, tmp_path):
    data = write(tmp_path / "r.csv", (REQUESTS / "01_identifiers.csv").read_text())
    path = job_file(tmp_path, store, [str(data)], tables='[fixed]\naction = "add"\n')
    before = exported(store, tmp_path / "before")
    result = invoke(path, "--reports", tmp_path / "r")
    assert result.exit_code == 3 and "column 'action'" in result.output and "7102" in result.output
    assert exported(store, tmp_path / "after") == before


def test_thresholds_abort_a_job_and_apply_nothing(store, tmp_path):
    path = job_file(tmp_path, store, [str(REQUESTS / "*.csv")], extra="max_errors = 3")
    before = exported(store, tmp_path / "before")
    result = invoke(path, "--reports", tmp_path / "r")
    assert result.exit_code == 3, result.output
    assert "ABORTED" in result.output and "max_errors = 3" in result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["aborted"] is True and summary["exit_code"] == 3 and summary["job"] == "job"
    assert (tmp_path / "r" / "errors.csv").exists() and (tmp_path / "r" / "success.csv").exists()
    assert exported(store, tmp_path / "after") == before
    rate = invoke(path, "--reports", tmp_path / "r2", "--max-errors", "1000", "--max-error-rate", "0.1")
    assert rate.exit_code == 3 and "max_error_rate" in rate.output
    assert exported(store, tmp_path / "after2") == before


def test_nightly_migration_job(sample_store, tmp_path):
    result = invoke(JOBS / "nightly_migration.toml", "--store", sample_store, "--reports", tmp_path / "r", "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["job"] == "nightly_migration" and summary["aborted"] is False
    assert [Path(f["path"]).name for f in summary["files"]] == [
        "01_identifiers.csv",
        "02_cards.csv",
        "identifier_changes.csv",
    ]
    assert summary["rows"] == 50 and summary["outcomes"]["failed"] == 20 and summary["merges"] == 2
    success = report(tmp_path / "r", "success.csv").filter(pl.col("file").str.ends_with("identifier_changes.csv"))
    assert success.filter(pl.col("outcome") == "merged").select("survivor_id", "victim_id").rows() == [("1025", "1026")]


def test_loyalty_import_job(sample_store, tmp_path):
    result = invoke(JOBS / "loyalty_import.toml", "--store", sample_store, "--reports", tmp_path / "r")
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["outcomes"] == {"applied": 5, "unchanged": 1, "merged": 0, "failed": 4}
    assert set(summary["errors_by_code"]) == {"3036", "3027", "3004", "8087"}


def test_dry_run_audit_job_changes_nothing(sample_store, tmp_path):
    before = exported(sample_store, tmp_path / "before")
    result = invoke(JOBS / "dry_run_audit.toml", "--store", sample_store, "--reports", tmp_path / "r")
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["rows"] == 67 and len(summary["files"]) == 3
    assert exported(sample_store, tmp_path / "after") == before


def test_default_reports_folder_is_reports_job_run_id_under_the_current_folder(store, tmp_path, monkeypatch):
    path = job_file(tmp_path / "jobs", store, [str(REQUESTS / "01_identifiers.csv")], name="weekly.toml")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = run_job(path)
    assert Path(result.reports_dir) == Path("reports") / "weekly" / result.run_id
    assert (work / "reports" / "weekly" / result.run_id / "summary.json").is_file()


def test_reports_template_is_relative_to_the_job_file(store, tmp_path):
    path = job_file(
        tmp_path / "jobs", store, [str(REQUESTS / "01_identifiers.csv")], extra='reports = "../out/{job}-{run_id}"'
    )
    result = run_job(path, run_id="R1")
    assert (tmp_path / "out" / "job-R1" / "summary.json").is_file()
    assert result.reports_dir == str(tmp_path / "out" / "job-R1")
