"""Job files (`jobs/*.toml`): a named, repeatable run with its inputs, store, org config, reports and layout.

`load_job` validates a job file whole and expands its input globs, refusing anything odd with a
`ConfigError` naming the key (exit 2, nothing done); `run_job` applies the command line's overrides
(precedence: flag > environment > job file > default, see settings.py) and calls `run_batch`.
The README's "Job files" section is the reference for every key.
"""

from __future__ import annotations

import glob
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import TomlValidator, load_config
from pipeline.errors import ConfigError
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.input.read import IGNORE, InputLayout, check_delimiter, check_encoding
from pipeline.results import RunResult, StageObserver
from pipeline.run import RunOptions, new_run_id, run_batch
from pipeline.settings import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    ENV_MASK_PII,
    ENV_MEMORY_LIMIT,
    ENV_THREADS,
    ENV_WORKERS,
    env_flag,
    pick,
)

TABLES = frozenset({"job", "columns", "fixed"})
JOB_KEYS = frozenset(
    {
        "name",
        "store",
        "config",
        "inputs",
        "reports",
        "dry_run",
        "allow_reapply",
        "skip_applied",
        "parquet_reports",
        "max_errors",
        "max_error_rate",
        "memory_limit",
        "threads",
        "workers",
        "series_by_code",
        "mask_pii",
        "max_removed_share",
        "allow_removals",
        "sheet",
        "delimiter",
        "encoding",
    }
)
REPORTS_FIELDS = frozenset({"job", "run_id"})
"""Placeholders a reports folder may use: {job} and {run_id}."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Job:
    """A validated job file; paths are already joined to the job file's folder, globs expanded."""

    path: str
    name: str
    store: str
    config: str
    inputs: tuple[str, ...]
    reports: str | None = None
    """Folder template ({job}, {run_id}); None means reports/<job>/<run id>/ under the current folder."""
    dry_run: bool = False
    allow_reapply: bool = False
    skip_applied: bool = False
    """Leave inputs an earlier run already applied out of the run, with a note, instead of refusing it."""
    parquet_reports: bool = False
    mask_pii: bool = False
    max_errors: int | None = None
    max_error_rate: float | None = None
    memory_limit: str | None = None
    threads: int | None = None
    workers: int | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    fixed: Mapping[str, str] = field(default_factory=dict)
    series_by_code: bool = False
    max_removed_share: float | None = None
    """`store refresh --job`: the truncation guard's share (pipeline/refresh.py); None: its default."""
    allow_removals: bool = False
    """`store refresh --job`: apply a snapshot past the guard."""
    sheet: str | None = None
    """The sheet of its workbook inputs to read; None: each workbook's first sheet."""
    delimiter: str | None = None
    """Its CSV inputs' field separator (a tab as "\t"); None: a comma."""
    encoding: str | None = None
    """Its CSV inputs' text encoding (canonical name, e.g. cp1252); None: UTF-8."""


@dataclass(frozen=True)
class JobOverrides:
    """Command-line values that replace the job file's; None leaves the job file's value."""

    store: Path | str | None = None
    config: Path | str | None = None
    reports: Path | str | None = None
    dry_run: bool | None = None
    allow_reapply: bool | None = None
    parquet_reports: bool | None = None
    mask_pii: bool | None = None
    max_errors: int | None = None
    max_error_rate: float | None = None
    memory_limit: str | None = None
    threads: int | None = None
    workers: int | None = None


def load_job(path: Path | str) -> Job:
    """Read and validate a job file; input globs are expanded (sorted) now, so a bad job fails before any run."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read the job file: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, "(file)", f"not valid TOML: {exc}") from exc
    return parse_job(raw, path)


def parse_job(raw: dict[str, Any], path: Path | str) -> Job:
    """Validate a parsed job document; relative paths are taken from the job file's folder."""
    v = _JobValidator(str(path))
    base = Path(path).parent
    v.known_keys(raw, "", TABLES)
    body = v.table(raw, "job", required=True)
    v.known_keys(body, "job.", JOB_KEYS)
    name = v.value(body, "name", str, default=Path(path).stem)
    if not _NAME.match(name):
        v.fail("job.name", f"'{name}' must be letters, digits, '.', '_' or '-' (it names the reports folder)")
    reports = v.value(body, "reports", str, default=None)
    if reports is not None:
        check_reports_template(reports, str(path), "job.reports")
        reports = _joined(base, reports)
    columns = _parse_columns(v, v.table(raw, "columns", required=False))
    fixed = _parse_fixed(v, v.table(raw, "fixed", required=False), columns)
    return Job(
        path=str(path),
        name=name,
        store=_joined(base, v.location(body, "store")),
        config=_joined(base, v.location(body, "config")),
        inputs=_expand_inputs(v, base, body),
        reports=reports,
        dry_run=v.value(body, "dry_run", bool, default=False),
        allow_reapply=v.value(body, "allow_reapply", bool, default=False),
        skip_applied=v.value(body, "skip_applied", bool, default=False),
        parquet_reports=v.value(body, "parquet_reports", bool, default=False),
        mask_pii=v.value(body, "mask_pii", bool, default=False),
        max_errors=v.at_least(body, "max_errors", minimum=0),
        max_error_rate=v.rate(body, "max_error_rate"),
        memory_limit=v.value(body, "memory_limit", str, default=None),
        threads=v.at_least(body, "threads", minimum=1),
        workers=v.at_least(body, "workers", minimum=1),
        columns=columns,
        fixed=fixed,
        series_by_code=v.value(body, "series_by_code", bool, default=False),
        max_removed_share=v.rate(body, "max_removed_share"),
        allow_removals=v.value(body, "allow_removals", bool, default=False),
        sheet=v.text(body, "sheet"),
        delimiter=v.checked(body, "delimiter", check_delimiter),
        encoding=v.checked(body, "encoding", check_encoding),
    )


def run_job(
    job: Job | Path | str,
    overrides: JobOverrides = JobOverrides(),
    run_id: str | None = None,
    observer: StageObserver | None = None,
) -> RunResult:
    """Run a job: its inputs, in order, against its store, with the command line's overrides applied."""
    job = job if isinstance(job, Job) else load_job(job)
    run_id = run_id or new_run_id()
    config = str(pick(overrides.config, None, job.config, None))
    options = RunOptions(
        dry_run=pick(overrides.dry_run, None, job.dry_run, False),
        allow_reapply=pick(overrides.allow_reapply, None, job.allow_reapply, False),
        skip_applied=job.skip_applied,
        parquet_reports=pick(overrides.parquet_reports, None, job.parquet_reports, False),
        mask_pii=pick(overrides.mask_pii, ENV_MASK_PII, job.mask_pii, False, env_flag),
        job=job.name,
        run_id=run_id,
        layout=job_layout(job, config),
        max_errors=pick(overrides.max_errors, None, job.max_errors, None),
        max_error_rate=pick(overrides.max_error_rate, None, job.max_error_rate, None),
        memory_limit=pick(overrides.memory_limit, ENV_MEMORY_LIMIT, job.memory_limit, DEFAULT_MEMORY_LIMIT),
        threads=pick(overrides.threads, ENV_THREADS, job.threads, DEFAULT_THREADS, int),
        workers=pick(overrides.workers, ENV_WORKERS, job.workers, DEFAULT_WORKERS, int),
        observer=observer,
    )
    store = pick(overrides.store, None, job.store, None)
    return run_batch(store, config, list(job.inputs), reports_folder(job, run_id, overrides.reports), options)


def reports_folder(job: Job, run_id: str, override: Path | str | None = None) -> Path:
    """The run's reports folder: the override, else the job's `reports`, else reports/<job>/<run id>/."""
    template = str(override) if override is not None else job.reports
    if template is None:
        return Path("reports") / job.name / run_id
    if override is not None:
        check_reports_template(template, "--reports", "reports")
    return Path(template.format(job=job.name, run_id=run_id))


def check_reports_template(template: str, where: str, key: str) -> None:
    """Refuse a reports folder with a placeholder other than {job} and {run_id}, or broken braces."""
    try:
        template.format(**dict.fromkeys(REPORTS_FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(where, key, f"'{template}': only {{job}} and {{run_id}} may be used ({exc!r})") from None


def job_layout(job: Job, config_path: str) -> InputLayout | None:
    """The job's InputLayout; series codes come from the org config (loaded only when series_by_code)."""
    if not (job.columns or job.fixed or job.series_by_code or job.sheet or job.delimiter or job.encoding):
        return None
    codes = None
    if job.series_by_code:
        codes = {series.code: series.id for series in load_config(config_path).card_series.values()}
    return InputLayout(
        columns=dict(job.columns),
        fixed=dict(job.fixed),
        series_codes=codes,
        sheet=job.sheet,
        delimiter=job.delimiter or ",",
        encoding=job.encoding or "utf-8",
    )


def _joined(base: Path, entry: str) -> str:
    return os.path.normpath(os.path.join(base, entry))


def _expand_inputs(v: _JobValidator, base: Path, body: dict[str, Any]) -> tuple[str, ...]:
    """Inputs in the listed order, each glob's matches sorted; a file named twice is kept once, first place."""
    if "inputs" not in body:
        v.fail("job.inputs", "missing (a list of paths or globs)")
    entries = body["inputs"]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e.strip() for e in entries):
        v.fail("job.inputs", "must be a non-empty list of paths or globs")
    found: dict[str, None] = {}
    for i, entry in enumerate(entries):
        pattern = os.path.join(base, entry)
        if _GLOB_CHARS & set(entry):
            matches = sorted(os.path.normpath(m) for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
            if not matches:
                v.fail(f"job.inputs[{i}]", f"'{entry}' matches no file (looked for {os.path.normpath(pattern)})")
        else:
            matches = [os.path.normpath(pattern)]
            if not os.path.isfile(matches[0]):
                v.fail(f"job.inputs[{i}]", f"'{entry}' is not a file (looked for {matches[0]})")
        found.update(dict.fromkeys(matches))
    return tuple(found)


def _parse_columns(v: _JobValidator, table: dict[str, Any]) -> dict[str, str]:
    allowed = set(REQUEST_COLUMNS) | {IGNORE}
    for header, column in table.items():
        key = f'columns."{header}"'
        if header != header.strip() or not header:
            v.fail(key, "header names are trimmed when read; write the name without surrounding white space")
        if not isinstance(column, str) or column not in allowed:
            v.fail(key, f'{column!r} must be a request column ({", ".join(REQUEST_COLUMNS)}) or "{IGNORE}" to ignore')
    return dict(table)


def _parse_fixed(v: _JobValidator, table: dict[str, Any], columns: Mapping[str, str]) -> dict[str, str]:
    fixed: dict[str, str] = {}
    for column, value in table.items():
        key = f"fixed.{column}"
        if column not in REQUEST_COLUMNS:
            v.fail(key, f"unknown request column (expected one of: {', '.join(REQUEST_COLUMNS)})")
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            v.fail(key, f"must be a string (or an integer), got {value!r}")
        mapped_from = [header for header, target in columns.items() if target == column]
        if mapped_from:
            v.fail(key, f"[columns] also maps '{mapped_from[0]}' to {column}; a column is either read or fixed")
        fixed[column] = str(value)
    return fixed


class _JobValidator(TomlValidator):
    """TomlValidator for the [job] table: keys are given by name and reported as job.<name>."""

    def value(self, body: dict, name: str, kind: type, default: Any = ...) -> Any:
        return super().value(body, f"job.{name}", kind, default)

    def location(self, body: dict, name: str) -> str:
        value = self.value(body, name, str)
        if not value.strip():
            self.fail(f"job.{name}", "must not be empty")
        return value

    def at_least(self, body: dict, name: str, minimum: int) -> int | None:
        value = self.value(body, name, int, default=None)
        if value is not None and value < minimum:
            self.fail(f"job.{name}", f"must be at least {minimum}, got {value}")
        return value

    def text(self, body: dict, name: str) -> str | None:
        """An optional non-empty string."""
        value = self.value(body, name, str, default=None)
        if value is not None and not value.strip():
            self.fail(f"job.{name}", "must not be empty")
        return value

    def checked(self, body: dict, name: str, check: Callable[[str], str]) -> str | None:
        """An optional string that `check` accepts, as `check` returns it (its ValueError names the problem)."""
        value = self.value(body, name, str, default=None)
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as error:
            self.fail(f"job.{name}", str(error))

    def rate(self, body: dict, name: str) -> float | None:
        value = body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            self.fail(f"job.{name}", f"must be a number from 0 to 1 (a share of the rows), got {value!r}")
        return float(value)
