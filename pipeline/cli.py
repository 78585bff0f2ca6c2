"""The command line: parse, call one library function, print, exit with the documented code.

No SQL, parsing or report writing here (STYLE.md); library exceptions map to exit codes.
"""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, ParamSpec, TypeVar, cast

import click

from pipeline.errors import EXIT_INTERNAL, LoyaltyBulkError
from pipeline.settings import (
    DEFAULT_ENGINE,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    ENGINES,
    ENV_ENGINE,
    ENV_MASK_PII,
    ENV_MEMORY_LIMIT,
    ENV_THREADS,
    ENV_WORKERS,
    env_flag,
    pick,
)

if TYPE_CHECKING:
    from pipeline.input.read import InputLayout

P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])


def _exits(func: Callable[P, int]) -> Callable[P, NoReturn]:
    """Turn library failures into a one-line message and their exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> NoReturn:
        try:
            code = func(*args, **kwargs)
        except LoyaltyBulkError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException):  # usage errors keep click's message and exit 2
            raise
        except Exception as exc:  # an unexpected failure is still reported, with exit code 4
            click.echo(f"internal error: {type(exc).__name__}: {exc}; nothing was applied", err=True)
            sys.exit(EXIT_INTERNAL)
        sys.exit(code or 0)

    return wrapper


@click.group()
@click.version_option(package_name="loyalty-bulk")
def main() -> None:
    """Batch identifier and card changes for a loyalty platform."""
    _without_hypothesis()


def _without_hypothesis() -> None:
    """Keep Pandera from importing hypothesis, which it loads for data synthesis whenever it is installed.

    No command synthesises data, and in a development install (the `test` extra) the import costs every
    run's check stage ~0.06 s (a sixth of a 10k-row batch's check). A process that already imported it
    (the test suite, which runs commands in-process) keeps it.
    """
    sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]


def _no_final_collection() -> None:
    """Skip the garbage collection Python runs once more while the process exits.

    It walks every object left (polars, DuckDB, Pandera and pydantic alike): about 0.1 s of a 10k-row
    run, for memory the operating system takes back anyway. Files are closed and fsynced before this.
    """
    gc.freeze()


atexit.register(_no_final_collection)  # once per process, not once per command (tests run many)


def _spark_options(func: F) -> F:
    """--engine and --spark-remote, for the commands the Spark engine serves (docs/spark.md)."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default=None,
            help=f"Where the store lives: duckdb (one file, the default) or spark (Delta tables through Spark "
            f"Connect) (env {ENV_ENGINE}).",
        ),
        click.option(
            "--spark-remote",
            default=None,
            help="The Spark Connect server of --engine spark, sc://HOST:PORT (env SPARK_REMOTE).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_max_component_option = click.option(
    "--max-component",
    type=click.IntRange(min=1),
    default=None,
    help="With --engine spark: refuse a batch whose rows that share keys form a connected component "
    "of more rows than this (default 1000000), before anything is decided.",
)
"""`run` and `job` on Spark (spark/run.py MAX_COMPONENT_ROWS)."""


def _engine(flag: str | None, job_value: str | None = None) -> str:
    """The engine: flag > LOYALTY_BULK_ENGINE > job file > duckdb."""
    engine = pick(flag, ENV_ENGINE, job_value, DEFAULT_ENGINE)
    if engine not in ENGINES:
        raise click.UsageError(f"{ENV_ENGINE}={engine!r}: expected one of {', '.join(ENGINES)}")
    return str(engine)


def _whole_store(
    engine: str | None, remote: str | None, store: str, command_id: str, change: Callable[[Any], Any]
) -> Any:
    """A whole-store command (revert, refresh) on the store: on a DuckDB file as it is; on a Delta store, on a copy of
    it on the driver, published all or nothing (spark/publish.py's change_whole)."""
    if _engine(engine) != "spark":
        return change(store)
    from pipeline.spark.delta import DeltaStore
    from pipeline.spark.publish import change_whole

    return change_whole(DeltaStore(_spark(remote), store), command_id, change)


@contextmanager
def _read_store(engine: str | None, remote: str | None, store: str, record: bool = True) -> Iterator[Path | str]:
    """The store to read: a DuckDB file as it is; a Delta store as a DuckDB copy of all of it on the driver, made once
    every committed run is rolled forward (open_store), with its record (ledger, undo log, provenance, pushes) or,
    without `record`, its rows and ledger only."""
    if _engine(engine) != "spark":
        yield store
        return
    from pipeline.spark.delta import RECORD_TABLES, DeltaStore, local_store
    from pipeline.spark.publish import open_store

    tables = RECORD_TABLES if record else ()
    with local_store(open_store(DeltaStore(_spark(remote), store)), record_tables=tables) as local:
        yield local


def _named(text: str, read: Path | str, store: str) -> str:
    """Output that names the store read: a Delta store's copy on the driver is named as the Delta store."""
    if str(read) == store:
        return text
    from pipeline.spark.delta import store_label

    return text.replace(str(read), store_label(store))


def _spark(remote: str | None) -> Any:
    """A Spark Connect session to --spark-remote or SPARK_REMOTE (a usage error without the `spark` extra)."""
    from pipeline.spark.session import spark_session

    return spark_session(remote)


def _csv_options(func: F) -> F:
    """Options shared by `run` and `validate`: how their CSV files are written (--delimiter, --encoding)."""
    options = [
        click.option(
            "--delimiter",
            default=None,
            callback=_checked_delimiter,
            help="The CSV files' field separator: one character such as ';', or 'tab' (default ',').",
        ),
        click.option(
            "--encoding",
            default=None,
            callback=_checked_encoding,
            help="The CSV files' text encoding, e.g. cp1252 for a Windows spreadsheet's CSV (default utf-8).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _checked_delimiter(_context: click.Context, _parameter: click.Parameter, value: str | None) -> str | None:
    from pipeline.input.read import check_delimiter

    return None if value is None else _usage(check_delimiter, value)


def _checked_encoding(_context: click.Context, _parameter: click.Parameter, value: str | None) -> str | None:
    from pipeline.input.read import check_encoding

    return None if value is None else _usage(check_encoding, value)


def _usage(check: Callable[[str], str], value: str) -> str:
    """A value as `check` accepts it; its ValueError becomes a usage error (exit 2)."""
    try:
        return check(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _csv_layout(delimiter: str | None, encoding: str | None) -> InputLayout | None:
    """The InputLayout of --delimiter and --encoding, or None when neither is given."""
    if delimiter is None and encoding is None:
        return None
    from pipeline.input.read import InputLayout

    return InputLayout(delimiter=delimiter or ",", encoding=encoding or "utf-8")


@main.command()
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Org config TOML (docs/config.md); required unless --job gives it.",
)
@click.option(
    "--job",
    "job_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the files as this job file reads its inputs ([columns], [fixed], [wide]...); its config and "
    "inputs serve when --config and FILES are not given.",
)
@click.option(
    "--reports",
    "reports_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/validate"),
    show_default=True,
    help="Folder for errors.csv and summary.json.",
)
@_csv_options
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@_exits
def validate(
    config_path: Path | None,
    job_path: Path | None,
    reports_dir: Path,
    delimiter: str | None,
    encoding: str | None,
    files: tuple[Path, ...],
) -> int:
    """Check request FILES against the org config; no store needed."""
    from pipeline.validate import validate_files

    layout = _csv_layout(delimiter, encoding)
    paths: list[Path | str] = list(files)
    if job_path is not None:
        from dataclasses import replace

        from pipeline.job import job_layout, load_job

        loaded = load_job(job_path)
        config_path = config_path or Path(loaded.config)
        paths = paths or list(loaded.inputs)
        layout = job_layout(loaded, str(config_path))
        if layout is not None and (delimiter or encoding):
            layout = replace(layout, delimiter=delimiter or layout.delimiter, encoding=encoding or layout.encoding)
        elif layout is None:
            layout = _csv_layout(delimiter, encoding)
    if config_path is None:
        raise click.UsageError("give --config (or --job, whose config is used)")
    if not paths:
        raise click.UsageError("give the FILES to check (or --job, whose inputs are checked)")
    result = validate_files(config_path, paths, reports_dir, layout=layout)
    click.echo(result.render())
    return result.exit_code


@main.group()
def store() -> None:
    """Create, export and inspect a store (one DuckDB file)."""


@store.command("init")
@click.argument("store_path", type=click.Path(path_type=str))
@click.option(
    "--snapshot",
    "snapshot_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder with customers, identifiers and cards (Parquet or CSV).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the findings when the snapshot is refused [default: STORE.init-report.csv].",
)
@click.option("--force", is_flag=True, help="Replace an existing store file.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Bind the new store to this org config now (otherwise its first run binds it); "
    "mobiles are read with its [mobile] countries.",
)
@click.option(
    "--layout",
    "layout_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A snapshot layout file (TOML): which export file and columns are each table (docs/refresh.md).",
)
@_spark_options
@_exits
def store_init(
    store_path: str,
    snapshot_dir: Path,
    report_path: Path | None,
    force: bool,
    config_path: Path | None,
    layout_path: Path | None,
    engine: str | None,
    spark_remote: str | None,
) -> int:
    """Make STORE_PATH from a snapshot folder, refusing one that breaks an invariant."""
    from pipeline.config import load_config
    from pipeline.run import new_run_id
    from pipeline.store.binding import set_config
    from pipeline.store.snapshot import init_store, load_snapshot_layout

    config = load_config(config_path) if config_path is not None else None  # a broken config: exit 2 first
    countries = config.mobile if config is not None else None
    layout = load_snapshot_layout(layout_path) if layout_path is not None else None
    if _engine(engine) == "spark":
        from pipeline.spark.delta import init_delta_store, store_label

        def bind(local: Path) -> str:
            assert config_path is not None
            return set_config(local, config_path, new_run_id()).replace(str(local), store_label(store_path))

        counts, bound = init_delta_store(
            _spark(spark_remote),
            store_path,
            snapshot_dir,
            report_path,
            force=force,
            countries=countries,
            layout=layout,
            bind=bind if config_path is not None else None,
        )
        click.echo(f"store {store_path} (Delta tables): {counts.render()}")
        if bound:
            click.echo(bound)
        return 0
    counts = init_store(
        store_path, snapshot_dir, report_path=report_path, force=force, countries=countries, layout=layout
    )
    click.echo(f"store {store_path}: {counts.render()}")
    if config_path is not None:
        click.echo(set_config(store_path, config_path, new_run_id()))
    return 0


@store.command("set-config")
@click.argument("store_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The org config the store belongs to from now on.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the colliding rows when re-reading mobiles is refused [default: STORE.set-config-report.csv].",
)
@_exits
def store_set_config(store_path: Path, config_path: Path, report_path: Path | None) -> int:
    """Record that the store now belongs to another org config (kept in the ledger); re-reads the
    stored mobiles when its [mobile] countries differ, refusing (exit 3) values that would collide."""
    from pipeline.run import new_run_id
    from pipeline.store.binding import set_config

    click.echo(set_config(store_path, config_path, new_run_id(), report_path=report_path))
    return 0


@store.command("refresh")
@click.argument("store_path", type=click.Path(path_type=str))
@click.option(
    "--snapshot",
    "snapshot_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The platform's next snapshot folder (customers, identifiers, cards).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The store's org config; needed when its mobiles were read with [mobile] countries.",
)
@click.option(
    "--reports",
    "reports_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Reports folder [default: reports/refresh/<run id>].",
)
@click.option("--dry-run", is_flag=True, help="Write the same reports and change nothing.")
@click.option(
    "--max-removed-share",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Refuse a snapshot that removes more than this share of a table's rows [default: the job's, else 0.05].",
)
@click.option("--allow-removals", is_flag=True, default=None, help="Apply a snapshot past the removal guard.")
@click.option(
    "--job",
    "job_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A job file whose config, max_removed_share, allow_removals and mask_pii apply (flags win).",
)
@click.option("--mask-pii", is_flag=True, default=None, help="Mask identifier values and card numbers in summary.html.")
@click.option("--json", "as_json", is_flag=True, help="Print refresh-summary.json instead of the summary.")
@click.option(
    "--layout",
    "layout_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A snapshot layout file (TOML): which export file and columns are each table (docs/refresh.md).",
)
@_spark_options
@_exits
def store_refresh(
    store_path: str,
    snapshot_dir: Path,
    config_path: Path | None,
    reports_dir: Path | None,
    dry_run: bool,
    max_removed_share: float | None,
    allow_removals: bool | None,
    mask_pii: bool | None,
    as_json: bool,
    layout_path: Path | None,
    job_path: Path | None,
    engine: str | None,
    spark_remote: str | None,
) -> int:
    """Bring STORE_PATH to the platform's next snapshot, keeping its ledger, undo logs and provenance:
    every changed key in changes.csv, what the platform kept of the store's runs, and the changes it did not
    keep as not_on_platform.csv; refused (exit 3) past the removal guard or for a snapshot that breaks an
    invariant.

    Example: loyalty-bulk store refresh store.duckdb --snapshot exports/2026-12-07 --config org.toml
    """
    from pipeline.console import REFRESH_STAGES, stage_progress
    from pipeline.files import json_text
    from pipeline.job import Job, load_job
    from pipeline.refresh import DEFAULT_MAX_REMOVED_SHARE, refresh_store
    from pipeline.run import new_run_id
    from pipeline.store.snapshot import load_snapshot_layout

    job: Job | None = load_job(job_path) if job_path is not None else None
    if _engine(engine) == "duckdb" and not Path(store_path).is_file():
        raise click.BadParameter(f"no store file at '{store_path}'", param_hint="'STORE_PATH'")
    refresh_id = new_run_id()
    with stage_progress(stages=REFRESH_STAGES) as observer:
        result = _whole_store(
            engine,
            spark_remote,
            store_path,
            refresh_id,
            lambda store: refresh_store(
                store,
                snapshot_dir,
                refresh_id,
                config_path=pick(config_path, None, job.config if job else None, None),
                reports_dir=reports_dir,
                dry_run=dry_run,
                max_removed_share=pick(
                    max_removed_share, None, job.max_removed_share if job else None, DEFAULT_MAX_REMOVED_SHARE
                ),
                allow_removals=pick(allow_removals, None, job.allow_removals if job else None, False),
                mask_pii=pick(mask_pii, ENV_MASK_PII, job.mask_pii if job else None, False, env_flag),
                layout=load_snapshot_layout(layout_path) if layout_path is not None else None,
                observer=observer,
            ),
        )
    click.echo(json_text(result.to_dict()) if as_json else result.render())
    return result.exit_code


@store.command("export")
@click.argument("store_path", type=click.Path(path_type=str))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@_spark_options
@_exits
def store_export(store_path: str, out_dir: Path, fmt: str, engine: str | None, spark_remote: str | None) -> int:
    """Write the store as a snapshot folder."""
    from pipeline.store.snapshot import export_store

    if _engine(engine) != "spark" and not Path(store_path).is_file():
        raise click.BadParameter(f"no store file at '{store_path}'", param_hint="'STORE_PATH'")
    with _read_store(engine, spark_remote, store_path, record=False) as path:
        counts = export_store(path, out_dir, cast(Literal["parquet", "csv"], fmt))
    click.echo(f"exported {counts.render()} to {out_dir}")
    return 0


@store.command("audit")
@click.argument("store_path", type=click.Path(path_type=str))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Org config TOML: also check sources, accounts, id types, card series, numbers and labels.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the findings CSV [default: STORE.audit.csv].",
)
@_spark_options
@_exits
def store_audit(
    store_path: str, config_path: Path | None, report_path: Path | None, engine: str | None, spark_remote: str | None
) -> int:
    """Check every invariant of the data model on STORE_PATH (read-only); exit 0 clean, 1 findings."""
    from pipeline.store.audit import audit_store

    with _read_store(engine, spark_remote, store_path, record=False) as path:
        report = report_path
        if report is None and str(path) != store_path:  # a Delta store's copy: the findings go beside the Delta store
            from pipeline.spark.delta import store_label

            report = Path(f"{store_label(store_path)}.audit.csv")
        result = audit_store(path, config_path, report_path=report)
        click.echo(_named(result.render(), path, store_path))
    return result.exit_code


@store.command("compact")
@click.argument("store_path", type=click.Path(path_type=str))
@click.option(
    "--retain-hours",
    type=click.IntRange(min=0),
    default=168,
    show_default=True,
    help="Keep the files of the versions this recent (time travel); older replaced files are deleted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_spark_options
@_exits
def store_compact(
    store_path: str, retain_hours: int, as_json: bool, engine: str | None, spark_remote: str | None
) -> int:
    """Compact a Delta store (--engine spark) and delete the files older versions left: OPTIMIZE and VACUUM."""
    if _engine(engine) != "spark":
        raise click.UsageError(
            "store compact is for a store of Delta tables (--engine spark); a DuckDB store file reuses the space "
            "earlier runs freed"
        )
    from pipeline.files import json_text
    from pipeline.run import new_run_id
    from pipeline.spark.delta import DeltaStore
    from pipeline.spark.upkeep import compact_store

    result = compact_store(DeltaStore(_spark(spark_remote), store_path), f"compact-{new_run_id()}", retain_hours)
    click.echo(json_text(result.to_dict()) if as_json else result.render())
    return 0


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--customers", type=click.IntRange(min=1), required=True)
@click.option("--rows", type=click.IntRange(min=0), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
@_exits
def sample(out_dir: Path, customers: int, rows: int, seed: int) -> int:
    """Write a seeded synthetic org config, snapshot and request file."""
    from pipeline.tools.sample import generate_sample

    info = generate_sample(out_dir, customers=customers, rows=rows, seed=seed)
    click.echo(info.render())
    return 0


def _engine_options(func: F) -> F:
    """Options shared by `run` and `job`: DuckDB resources and error thresholds."""
    options = [
        click.option(
            "--memory-limit",
            default=None,
            help=f"DuckDB memory limit, e.g. 4GB (env {ENV_MEMORY_LIMIT}; default {DEFAULT_MEMORY_LIMIT}).",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help=f"DuckDB threads (env {ENV_THREADS}; default: all cores).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help=f"Cores replaying the rows that share keys, each a share of their connected components, "
            f"this process included (env {ENV_WORKERS}; default: all cores).",
        ),
        click.option(
            "--max-errors",
            type=click.IntRange(min=0),
            default=None,
            help="Abort (exit 3, nothing applied) when more rows than this fail.",
        ),
        click.option(
            "--max-error-rate",
            type=click.FloatRange(0, 1),
            default=None,
            help="Abort (exit 3, nothing applied) when this share of rows fails, e.g. 0.05.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _output_options(func: F) -> F:
    """Options shared by `run` and `job`: --json, --quiet, --verbose (see pipeline.console.report_run)."""

    @wraps(func)
    def checked(*args: Any, quiet: bool, verbose: bool, **kwargs: Any) -> Any:
        if quiet and verbose:
            raise click.UsageError("--quiet and --verbose cannot be used together")
        return func(*args, quiet=quiet, verbose=verbose, **kwargs)

    options = [
        click.option(
            "--json",
            "json_output",
            is_flag=True,
            help="Print the run summary as JSON (the content of summary.json) and nothing else on stdout.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Nothing on stdout (unless --json); only errors on stderr."),
        click.option(
            "-v",
            "--verbose",
            is_flag=True,
            help="Also show stage seconds as they finish, input files with sha256, store counts.",
        ),
    ]
    for option in reversed(options):
        checked = option(checked)
    return cast(F, checked)


@main.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(path_type=str),
    help="The store (a DuckDB file; with --engine spark, the folder or URI of its Delta tables).",
)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Org config TOML (docs/config.md).",
)
@click.option(
    "--reports",
    "reports_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the reports are written into.",
)
@click.option("--dry-run", is_flag=True, help="Do everything but change the store; reports as for a real run.")
@click.option("--allow-reapply", is_flag=True, help="Apply files whose content an earlier run already applied.")
@click.option(
    "--parquet",
    "parquet_reports",
    is_flag=True,
    help="Also write success, errors and merges as Parquet (raw values, not neutralised).",
)
@click.option(
    "--mask-pii", is_flag=True, default=None, help=f"Mask identifier values in every report (env {ENV_MASK_PII}=1)."
)
@_engine_options
@_spark_options
@_max_component_option
@_csv_options
@_output_options
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_exits
def run(
    store_path: str,
    config_path: Path,
    reports_dir: Path,
    dry_run: bool,
    allow_reapply: bool,
    parquet_reports: bool,
    mask_pii: bool | None,
    memory_limit: str | None,
    threads: int | None,
    workers: int | None,
    max_errors: int | None,
    max_error_rate: float | None,
    engine: str | None,
    spark_remote: str | None,
    max_component: int | None,
    delimiter: str | None,
    encoding: str | None,
    json_output: bool,
    quiet: bool,
    verbose: bool,
    files: tuple[Path, ...],
) -> int:
    """Apply request FILES to the store, in order, with row-by-row semantics."""
    from pipeline.console import report_run, stage_progress
    from pipeline.run import RunOptions, run_batch

    with stage_progress(quiet=quiet, verbose=verbose) as observer:
        options = RunOptions(
            dry_run=dry_run,
            allow_reapply=allow_reapply,
            parquet_reports=parquet_reports,
            max_errors=max_errors,
            max_error_rate=max_error_rate,
            mask_pii=pick(mask_pii or None, ENV_MASK_PII, None, False, env_flag),
            memory_limit=pick(memory_limit, ENV_MEMORY_LIMIT, None, DEFAULT_MEMORY_LIMIT),
            threads=pick(threads, ENV_THREADS, None, DEFAULT_THREADS, int),
            workers=pick(workers, ENV_WORKERS, None, DEFAULT_WORKERS, int),
            layout=_csv_layout(delimiter, encoding),
            observer=observer,
        )
        if _engine(engine) == "spark":
            from pipeline.spark.run import run_on_spark

            result = run_on_spark(
                _spark(spark_remote), store_path, config_path, list(files), reports_dir, options, max_component
            )
        else:
            result = run_batch(store_path, config_path, list(files), reports_dir, options)
    report_run(result, json_output=json_output, quiet=quiet, verbose=verbose)
    return result.exit_code


@main.command()
@click.argument("job_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run/--no-dry-run",
    default=None,
    help="Do everything but change the store (or, with --no-dry-run, apply a dry_run job).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=str),
    default=None,
    help="Use this store instead of the job's.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Use this org config instead of the job's.",
)
@click.option(
    "--reports",
    "reports_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the reports here instead of the job's folder ({job} and {run_id} allowed).",
)
@click.option(
    "--allow-reapply", is_flag=True, default=None, help="Apply files whose content an earlier run already applied."
)
@click.option(
    "--parquet", "parquet_reports", is_flag=True, default=None, help="Also write success, errors and merges as Parquet."
)
@click.option(
    "--mask-pii", is_flag=True, default=None, help=f"Mask identifier values in every report (env {ENV_MASK_PII}=1)."
)
@_engine_options
@_spark_options
@_max_component_option
@_output_options
@_exits
def job(
    job_path: Path,
    dry_run: bool | None,
    store_path: str | None,
    config_path: Path | None,
    reports_dir: Path | None,
    allow_reapply: bool | None,
    parquet_reports: bool | None,
    mask_pii: bool | None,
    memory_limit: str | None,
    threads: int | None,
    workers: int | None,
    max_errors: int | None,
    max_error_rate: float | None,
    engine: str | None,
    spark_remote: str | None,
    max_component: int | None,
    json_output: bool,
    quiet: bool,
    verbose: bool,
) -> int:
    """Run the job file JOB_PATH; options given here override the job file's."""
    from pipeline.console import report_run, stage_progress
    from pipeline.job import JobOverrides, load_job, run_job

    loaded = load_job(job_path)
    overrides = JobOverrides(
        store=store_path,
        config=config_path,
        reports=reports_dir,
        dry_run=dry_run,
        allow_reapply=allow_reapply,
        parquet_reports=parquet_reports,
        mask_pii=mask_pii,
        max_errors=max_errors,
        max_error_rate=max_error_rate,
        memory_limit=memory_limit,
        threads=threads,
        workers=workers,
    )
    runner = None
    if _engine(engine, loaded.engine) == "spark":
        from functools import partial

        from pipeline.spark.run import run_on_spark

        runner = partial(run_on_spark, _spark(spark_remote), max_component=max_component)
    with stage_progress(quiet=quiet, verbose=verbose) as observer:
        result = run_job(loaded, overrides, observer=observer, runner=runner)
    report_run(result, json_output=json_output, quiet=quiet, verbose=verbose)
    return result.exit_code


@main.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(path_type=str),
    help="The store (a DuckDB file; with --engine spark, the folder or URI of its Delta tables).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@_spark_options
@_exits
def runs(store_path: str, as_json: bool, engine: str | None, spark_remote: str | None) -> int:
    """List the store's runs, refreshes, reverts and config changes, newest first: files, counts, exit code,
    what reached the platform and whether each was reverted.

    Example: loyalty-bulk runs --store reports/demo/store.duckdb
    """
    from pipeline.files import json_text
    from pipeline.store.history import list_runs

    with _read_store(engine, spark_remote, store_path) as path:
        listing = list_runs(path)
        text = json_text(listing.to_dict()) if as_json else listing.render()
        click.echo(_named(text, path, store_path))
    return 0


@main.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(path_type=str),
    help="The store (a DuckDB file; with --engine spark, the folder or URI of its Delta tables).",
)
@click.argument("run_id")
@click.option(
    "--local-only", is_flag=True, help="Revert the store alone when the run reached the platform (which keeps it)."
)
@click.option(
    "--compensate",
    is_flag=True,
    help="Also write the calls that undo the run on the platform (revert-calls.ndjson), for `push`.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The org config (needed with --compensate: the calls' sources and labels).",
)
@click.option(
    "--reports",
    "reports_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where --compensate writes revert-calls.ndjson [default: reports/revert/<run id>].",
)
@_spark_options
@_exits
def revert(
    store_path: str,
    run_id: str,
    local_only: bool,
    compensate: bool,
    config_path: Path | None,
    reports_dir: Path | None,
    engine: str | None,
    spark_remote: str | None,
) -> int:
    """Undo the applied run RUN_ID exactly, unless a later run touched what it touched. A run whose calls reached
    the platform needs --local-only (the store alone) or --compensate (the calls that undo it on the platform
    too; a run with a pushed merge can only be reverted --local-only).

    Example: loyalty-bulk revert --store store.duckdb 20261206T220915Z-9a72b1 --compensate --config org.toml
    """
    from pipeline.lineage.revert import revert_run
    from pipeline.run import new_run_id

    if local_only and compensate:
        raise click.UsageError("give --local-only or --compensate, not both")
    revert_id = new_run_id()
    if compensate:
        from pipeline.delivery.compensate import revert_and_compensate

        if config_path is None:
            raise click.UsageError("--compensate needs --config ORG (the calls' sources and card labels)")
        folder = reports_dir or Path("reports") / "revert" / revert_id

        def undo(store: Path | str) -> Any:
            return revert_and_compensate(store, run_id, revert_id, config_path, folder)

    else:

        def undo(store: Path | str) -> Any:
            return revert_run(store, run_id, revert_id, local_only=local_only)

    result = _whole_store(engine, spark_remote, store_path, revert_id, undo)
    click.echo(result.render())
    return 0


@main.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The store the emulated platform starts from; its state is written back on SIGTERM/SIGINT.",
)
@click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The org config."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 (0: a free one; the first line on stdout names it).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Calls per minute; past it 429 with Retry-After. Default: no limit.",
)
@click.option(
    "--latency",
    "latency_ms",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Milliseconds to wait before each answer.",
)
@click.option(
    "--latency-jitter",
    "latency_jitter_ms",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Up to this many more milliseconds, uniformly random per answer.",
)
@click.option(
    "--faults",
    default="",
    help="Shares of changeIdentifier calls that get a fault, e.g. "
    '"429:0.05,500:0.02,timeout:0.02,drop-after-apply:0.02".',
)
@click.option(
    "--stall",
    "stall_seconds",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Seconds a `timeout` fault waits (after applying the call) before it answers.",
)
@click.option(
    "--fault-retry-after",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Retry-After seconds of an injected 429.",
)
@click.option(
    "--token-ttl",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Lifetime in seconds of the OAuth tokens it issues.",
)
@click.option(
    "--token-uses",
    type=click.IntRange(min=1),
    default=None,
    help="A token is refused (401, code 498) after this many requests: rehearses a mid-push expiry.",
)
@click.option("--seed", type=int, default=None, help="Seed of the fault and latency draws.")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append every request received with its answer, one JSON line each.",
)
@_exits
def emulate(
    store_path: Path,
    config_path: Path,
    port: int,
    rate: float | None,
    latency_ms: float,
    latency_jitter_ms: float,
    faults: str,
    stall_seconds: float,
    fault_retry_after: int,
    token_ttl: int,
    token_uses: int | None,
    seed: int | None,
    log_path: Path | None,
) -> int:
    """Serve the platform's API on 127.0.0.1 over a store, for rehearsals and tests of `push`."""
    from pipeline.config import load_config
    from pipeline.delivery.emulate import EmulatorOptions, parse_faults, serve

    try:
        fault_shares = parse_faults(faults)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--faults") from None
    options = EmulatorOptions(
        port=port,
        rate_per_minute=rate,
        latency_ms=latency_ms,
        latency_jitter_ms=latency_jitter_ms,
        faults=fault_shares,
        stall_seconds=stall_seconds,
        fault_retry_after=fault_retry_after,
        token_ttl_seconds=token_ttl,
        token_uses=token_uses,
        seed=seed,
        log=log_path,
    )
    return serve(store_path, load_config(config_path), options, announce=lambda line: click.echo(line))


@main.command("spark-server")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=15002,
    show_default=True,
    help="Port on 127.0.0.1 (0: a free one; the first line on stdout names it).",
)
@_exits
def spark_server(port: int) -> int:
    """Serve Spark Connect on 127.0.0.1 (Sail, no JVM) for the Spark engine, until SIGTERM or Ctrl-C."""
    from pipeline.spark.server import serve as serve_spark

    return serve_spark(port, announce=lambda line: click.echo(line))


@main.command()
@click.argument("reports_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The org config; its [platform] table gives api, auth, rate_per_minute and max_in_flight.",
)
@click.option("--api", default=None, help="The platform's base URL (overrides [platform] api).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Requests per minute over every request the push makes (overrides [platform] rate_per_minute).",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=None,
    help="Requests awaiting an answer at once (overrides [platform] max_in_flight).",
)
@click.option(
    "--max-drift",
    type=click.IntRange(min=0),
    default=None,
    help="Stop sending once more calls than this drifted (exit 3; resume with the same command).",
)
@click.option(
    "--max-drift-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Stop sending once the share of drifted calls among those ended exceeds this.",
)
@click.option(
    "--timeout",
    "timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=30,
    show_default=True,
    help="Seconds to wait for an answer before the call is settled by a read.",
)
@click.option(
    "--retry",
    is_flag=True,
    default=False,
    help="On a finished push: send the failed calls, and the calls blocked only by them, again (after an outage).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Requests per call (sends and settling reads) before it ends failed.",
)
@click.option("--mask-pii", is_flag=True, default=False, help="Mask identifier values in push.csv.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print push-summary.json instead of the summary.")
@click.option("--quiet", is_flag=True, default=False, help="Print nothing but errors; the exit code tells the rest.")
@click.option("--verbose", is_flag=True, default=False, help="Also print every drifted call.")
@_exits
def push(
    reports_dir: Path,
    config_path: Path,
    api: str | None,
    rate: float | None,
    max_in_flight: int | None,
    max_drift: int | None,
    max_drift_rate: float | None,
    timeout_seconds: float,
    retry: bool,
    max_attempts: int,
    mask_pii: bool,
    as_json: bool,
    quiet: bool,
    verbose: bool,
) -> int:
    """Send a run's calls.ndjson to the platform: paced, ordered by `after`, resumable (push.journal)."""
    from pipeline.console import push_progress
    from pipeline.delivery.push import PushOptions, push_run
    from pipeline.files import json_text

    options = PushOptions(
        api=api,
        rate_per_minute=rate,
        max_in_flight=max_in_flight,
        max_drift=max_drift,
        max_drift_rate=max_drift_rate,
        mask_pii=mask_pii,
        timeout_seconds=timeout_seconds,
        retry=retry,
        max_attempts=max_attempts,
    )
    with push_progress(enabled=not quiet and not as_json) as progress:
        result = push_run(reports_dir, config_path, options, progress=progress)
    if as_json:
        click.echo(json_text(result.to_dict()))
    elif not quiet:
        click.echo(result.render())
        if verbose:
            for drifted in result.drifted:
                click.echo(f"  drift: {drifted}")
    elif result.exit_code:
        click.echo(f"push ended with exit code {result.exit_code}: {result.outcomes}", err=True)
    return result.exit_code


@main.command()
@click.option(
    "--store",
    "store_path",
    required=True,
    type=click.Path(path_type=str),
    help="The store (a DuckDB file, opened read-only; with --engine spark, the folder or URI of its Delta tables).",
)
@click.argument("customer_id", required=False, type=click.IntRange(min=1))
@click.option("--value", "value", default=None, help="Explain an identifier value instead: TYPE=VALUE (normalised).")
@click.option("--source", default=None, help="With --value: only this source.")
@click.option("--account", "account_id", default=None, help="With --value and --source: only this account.")
@click.option("--card", "card_number", default=None, help="Explain a card instead: its number.")
@click.option("--json", "json_output", is_flag=True, help="Print the explanation as JSON, the same facts as the text.")
@click.option(
    "--mask-pii", is_flag=True, default=None, help=f"Mask identifier values and card numbers (env {ENV_MASK_PII}=1)."
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the explanation as a self-contained HTML page to this file.",
)
@_spark_options
@_exits
def explain(
    store_path: str,
    customer_id: int | None,
    value: str | None,
    source: str | None,
    account_id: str | None,
    card_number: str | None,
    json_output: bool,
    mask_pii: bool | None,
    html_path: Path | None,
    engine: str | None,
    spark_remote: str | None,
) -> int:
    """Explain CUSTOMER_ID, a --value or a --card: where it came from, every merge, every run that touched it."""
    from pipeline.lineage.explain import explain as explain_target
    from pipeline.lineage.explain import parse_target
    from pipeline.lineage.explain_html import write_explanation_html

    try:
        target = parse_target(customer_id, value, source, account_id, card_number)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with _read_store(engine, spark_remote, store_path) as path:
        masked = pick(mask_pii or None, ENV_MASK_PII, None, False, env_flag)
        result = explain_target(path, target, mask_pii=masked)
        click.echo(_named(result.to_json() if json_output else result.render(), path, store_path))
    if html_path is not None:
        write_explanation_html(result, html_path)
        if not json_output:
            click.echo(f"page: {html_path}")
    return result.exit_code
