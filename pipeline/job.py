"""Job files (`jobs/*.toml`): a named, repeatable run with its inputs, store, org config, reports and layout.

`load_job` validates a job file whole and expands its input globs, refusing anything odd with a
`ConfigError` naming the key (exit 2, nothing done); `run_job` applies the command line's overrides
(precedence: flag > environment > job file > default, see settings.py) and calls `run_batch`.
The README's "Job files" section is the reference for every key.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import CARD, LINKABLE_STATUSES, OrgConfig, TomlValidator, load_config
from pipeline.errors import ConfigError
from pipeline.input.columns import REQUEST_COLUMNS
from pipeline.input.read import IGNORE, InputLayout, check_delimiter, check_encoding
from pipeline.input.wide import WIDE_ACTIONS, WideColumn, WideLayout, WideLookup
from pipeline.results import RunResult, StageObserver
from pipeline.run import RunOptions, new_run_id, run_batch
from pipeline.settings import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_THREADS,
    DEFAULT_WORKERS,
    ENGINES,
    ENV_MASK_PII,
    ENV_MEMORY_LIMIT,
    ENV_THREADS,
    ENV_WORKERS,
    env_flag,
    pick,
)

TABLES = frozenset({"job", "columns", "fixed", "wide"})
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
        "series",
        "engine",
    }
)
WIDE_KEYS = frozenset({"customer_id", "lookup", "row_id", "ignore", "columns"})
WIDE_LOOKUP_KEYS = frozenset({"column", "id_type", "source", "account_id"})
WIDE_COLUMN_KEYS = frozenset(
    {
        "column",
        "id_type",
        "source",
        "account_id",
        "action",
        "series_id",
        "series_code",
        "series_column",
        "series",
        "status_label",
        "status_column",
    }
)
"""The keys of [wide], of its `lookup` and of each [[wide.columns]] entry (docs/jobs.md)."""
SERIES_KEYS = ("series_id", "series_code", "series_column", "series")
STATUS_KEYS = ("status_label", "status_column")
FROM_NUMBER = "from_number"
"""`series = "from_number"`: a card's series is the one whose prefix, digits and suffix its number fits."""
Runner = Callable[[Any, str, list[str], Path, RunOptions], RunResult]
"""What runs a job's batch: run_batch's arguments (store, config, inputs, reports folder, options)."""
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
    series_from_number: bool = False
    """`series = "from_number"`: a card row of its long inputs without a series_id takes the series its number fits."""
    wide: WideLayout | None = None
    """[wide]: its CSV, workbook and Parquet inputs are wide files (input/wide.py); series codes not yet translated."""
    engine: str | None = None
    """`duckdb` or `spark` (settings.ENGINES): what its store is; None: the command line's, else the default."""


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
    wide = _parse_wide(v, v.table(raw, "wide", required=False)) if "wide" in raw else None
    if wide is not None and (columns or fixed):
        v.fail("wide", "[wide] maps every column itself: a job has [wide] or [columns] and [fixed], not both")
    series = v.value(body, "series", str, default=None)
    if series is not None and series != FROM_NUMBER:
        v.fail("job.series", f'must be "{FROM_NUMBER}" (a card row\'s series found from its number), got {series!r}')
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
        series_from_number=series is not None,
        wide=wide,
        engine=v.checked(body, "engine", _engine),
    )


def run_job(
    job: Job | Path | str,
    overrides: JobOverrides = JobOverrides(),
    run_id: str | None = None,
    observer: StageObserver | None = None,
    runner: Runner | None = None,
) -> RunResult:
    """Run a job: its inputs, in order, against its store, with the command line's overrides applied.

    `runner` runs the batch in place of run_batch (the Spark engine's run, which the face passes in)."""
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
    run = runner or run_batch
    return run(store, config, list(job.inputs), reports_folder(job, run_id, overrides.reports), options)


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


def _engine(value: str) -> str:
    if value not in ENGINES:
        raise ValueError(f"must be one of {', '.join(ENGINES)}, got {value!r}")
    return value


def job_layout(job: Job, config_path: str) -> InputLayout | None:
    """The job's InputLayout. The org config is loaded when the layout needs it: series codes (series_by_code,
    a wide card column's series_code), series patterns (`series = "from_number"`), and a [wide] mapping, whose
    sources, accounts, id types, series and labels are checked against it here (ConfigError naming the key)."""
    from_number = job.series_from_number or (
        job.wide is not None and any(c.series_from_number for c in job.wide.columns)
    )
    if not (
        job.columns
        or job.fixed
        or job.series_by_code
        or job.sheet
        or job.delimiter
        or job.encoding
        or from_number
        or job.wide
    ):
        return None
    config = load_config(config_path) if job.series_by_code or from_number or job.wide else None
    codes = patterns = None
    if config is not None and job.series_by_code:
        codes = {series.code: series.id for series in config.card_series.values()}
    if config is not None and from_number:
        patterns = {series.id: series.number_pattern for series in config.card_series.values()}
    wide = job.wide
    if wide is not None and config is not None:
        wide = check_wide_against(_JobValidator(job.path), wide, config)
    return InputLayout(
        columns=dict(job.columns),
        fixed=dict(job.fixed),
        series_codes=codes,
        sheet=job.sheet,
        delimiter=job.delimiter or ",",
        encoding=job.encoding or "utf-8",
        wide=wide,
        series_from_number=job.series_from_number,
        series_patterns=patterns,
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


def _parse_wide(v: _JobValidator, table: dict[str, Any]) -> WideLayout:
    """[wide] checked key by key (the org config is not read here: check_wide_against does that)."""
    v.known_keys(table, "wide.", WIDE_KEYS)
    if ("customer_id" in table) == ("lookup" in table):
        v.fail("wide", "give the customer reference: customer_id (the column of the customer id) or lookup, not both")
    customer_id = v.header(table, "wide.customer_id") if "customer_id" in table else None
    lookup = _parse_wide_lookup(v, table["lookup"]) if "lookup" in table else None
    row_id = v.header(table, "wide.row_id") if "row_id" in table else None
    ignore = tuple(v.string_list(table.get("ignore", []), "wide.ignore"))
    for i, name in enumerate(ignore):
        v.header_name(name, f"wide.ignore[{i}]")
    entries = table.get("columns")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        v.fail("wide.columns", "missing: one [[wide.columns]] table per identifier or card column")
    columns = tuple(_parse_wide_column(v, entry, f"wide.columns[{i}]") for i, entry in enumerate(entries))
    wide = WideLayout(columns=columns, customer_id=customer_id, lookup=lookup, row_id=row_id, ignore=ignore)
    _check_wide_roles(v, wide)
    return wide


def _parse_wide_lookup(v: _JobValidator, lookup: Any) -> WideLookup:
    if not isinstance(lookup, dict):
        v.fail("wide.lookup", "must be a table: { column = ..., id_type = ..., source = ... }")
    v.known_keys(lookup, "wide.lookup.", WIDE_LOOKUP_KEYS)
    column = v.header(lookup, "wide.lookup.column")
    id_type = v.word(lookup, "wide.lookup.id_type")
    if id_type == CARD:
        for key in ("source", "account_id"):
            if key in lookup:
                v.fail(f"wide.lookup.{key}", "a card is found by its number in the whole organisation: no scope")
        return WideLookup(column=column, id_type=id_type)
    source = v.word(lookup, "wide.lookup.source")
    account = v.word(lookup, "wide.lookup.account_id") if "account_id" in lookup else ""
    return WideLookup(column=column, id_type=id_type, source=source, account_id=account)


def _parse_wide_column(v: _JobValidator, entry: dict[str, Any], key: str) -> WideColumn:
    v.known_keys(entry, f"{key}.", WIDE_COLUMN_KEYS)
    id_type = v.word(entry, f"{key}.id_type")
    action = v.word(entry, f"{key}.action").lower() if "action" in entry else "add"
    if action not in WIDE_ACTIONS:
        v.fail(f"{key}.action", f"must be add, remove or replace, got {entry['action']!r}")
    card = id_type == CARD
    if card and action == "replace":
        v.fail(f"{key}.action", "replace is not for cards (a card column adds or removes)")
    given = [name for name in (*SERIES_KEYS, *STATUS_KEYS) if name in entry]
    if given and not card:
        v.fail(f"{key}.{given[0]}", f'only a card column (id_type = "{CARD}") takes a series or a status')
    series_given = [name for name in SERIES_KEYS if name in entry]
    status_given = [name for name in STATUS_KEYS if name in entry]
    if len(series_given) > 1:
        v.fail(
            f"{key}.{series_given[1]}", f"give one of {', '.join(SERIES_KEYS)}, not both {' and '.join(series_given)}"
        )
    if len(status_given) > 1:
        v.fail(f"{key}.{status_given[1]}", "give status_label or status_column, not both")
    if card and action == "add" and not series_given:
        v.fail(
            key,
            "a card column that adds needs its series: series_id, series_code, series_column or "
            f'series = "{FROM_NUMBER}"',
        )
    if card and action == "add" and not status_given:
        v.fail(key, "a card column that adds needs its status: status_label or status_column")
    series_id = None
    if "series_id" in entry:
        number = v.typed(entry, f"{key}.series_id", int)
        series_id = str(number)
    if "series" in entry and v.typed(entry, f"{key}.series", str) != FROM_NUMBER:
        v.fail(
            f"{key}.series", f'must be "{FROM_NUMBER}" (the series found from the card number), got {entry["series"]!r}'
        )
    return WideColumn(
        column=v.header(entry, f"{key}.column"),
        id_type=id_type,
        source=v.word(entry, f"{key}.source"),
        account_id=v.word(entry, f"{key}.account_id") if "account_id" in entry else "",
        action=action,
        series_id=series_id,
        series_code=v.word(entry, f"{key}.series_code") if "series_code" in entry else None,
        series_column=v.header(entry, f"{key}.series_column") if "series_column" in entry else None,
        series_from_number="series" in entry,
        status_label=v.word(entry, f"{key}.status_label") if "status_label" in entry else None,
        status_column=v.header(entry, f"{key}.status_column") if "status_column" in entry else None,
    )


def _check_wide_roles(v: _JobValidator, wide: WideLayout) -> None:
    """A file column has one role: the customer reference, the row_id, an identifier or card column (one
    column may feed several entries), a card's series or status column, or ignored."""
    reference = "wide.customer_id" if wide.lookup is None else "wide.lookup.column"
    identifiers = {c.column for c in wide.columns}
    extras = {name for c in wide.columns for name in (c.series_column, c.status_column) if name is not None}
    if wide.lookup is None and wide.reference in identifiers | extras:
        v.fail(reference, f"'{wide.reference}' is also a mapped column of [[wide.columns]]")
    if wide.lookup is not None and wide.reference in extras:
        v.fail(reference, f"'{wide.reference}' is also a card's series or status column")
    if wide.row_id is not None and wide.row_id in {wide.reference} | identifiers | extras:
        v.fail("wide.row_id", f"'{wide.row_id}' is also read as another column; the row_id column is its own")
    for i, column in enumerate(wide.columns):
        for name, role in ((column.series_column, "series_column"), (column.status_column, "status_column")):
            if name is not None and name in identifiers:
                v.fail(f"wide.columns[{i}].{role}", f"'{name}' is also an identifier or card column")
    read = set(wide.read_columns())
    for i, name in enumerate(wide.ignore):
        if name in read:
            v.fail(f"wide.ignore[{i}]", f"'{name}' is read by the mapping; a column is either read or ignored")


def check_wide_against(v: TomlValidator, wide: WideLayout, config: OrgConfig) -> WideLayout:
    """[wide] checked against the org config: each scope (source, account) and id type as a row's check stage
    would check it, fixed series and labels known and fit for the action; series codes become series ids."""
    if wide.lookup is not None and wide.lookup.source is not None:
        lookup = wide.lookup
        _check_scope(v, config, "wide.lookup", lookup.source, lookup.account_id, lookup.id_type)  # type: ignore[arg-type]
    codes = {series.code: series.id for series in config.card_series.values()}
    columns = []
    for i, column in enumerate(wide.columns):
        key = f"wide.columns[{i}]"
        _check_scope(v, config, key, column.source, column.account_id, column.id_type)
        if column.series_id is not None and int(column.series_id) not in config.card_series:
            v.fail(f"{key}.series_id", f"{column.series_id} is not a configured card series")
        if column.series_code is not None:
            if column.series_code not in codes:
                v.fail(f"{key}.series_code", f"'{column.series_code}' is not the code of a configured card series")
            column = dataclasses.replace(column, series_id=str(codes[column.series_code]), series_code=None)
        if column.status_label is not None:
            status = config.card_labels.get(column.status_label)
            if status is None:
                v.fail(f"{key}.status_label", f"'{column.status_label}' is not a configured card label")
            allowed = LINKABLE_STATUSES if column.action == "add" else {"NOT_ISSUED"}
            if status not in allowed:
                v.fail(
                    f"{key}.status_label",
                    f"'{column.status_label}' maps to {status}; {'adding' if column.action == 'add' else 'removing'}"
                    f" a card takes a label of {' or '.join(sorted(allowed))}",
                )
        columns.append(column)
    return dataclasses.replace(wide, columns=tuple(columns))


def _check_scope(v: TomlValidator, config: OrgConfig, key: str, source: str, account: str, id_type: str) -> None:
    known = config.sources.get(source)
    if known is None:
        v.fail(f"{key}.source", f"'{source}' is not a source of the org config ({', '.join(sorted(config.sources))})")
    if known.kind == "multi" and not account:
        v.fail(f"{key}.account_id", f"missing: {source} is a multi-account source ({', '.join(known.accounts)})")
    if known.kind == "single" and account:
        v.fail(f"{key}.account_id", f"{source} is a single-account source: it takes no account_id")
    if account and account not in known.accounts:
        v.fail(f"{key}.account_id", f"'{account}' is not an account of {source} ({', '.join(known.accounts)})")
    if id_type != CARD and id_type not in known.id_types:
        v.fail(
            f"{key}.id_type", f"'{id_type}' is not an id type {source} accepts ({', '.join(sorted(known.id_types))})"
        )


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

    def typed(self, table: dict, key: str, kind: type) -> Any:
        """A required value of a table other than [job], by its full key."""
        return TomlValidator.value(self, table, key, kind)

    def header(self, table: dict, key: str) -> str:
        """A file column's name: a non-empty string without surrounding white space (headers are trimmed)."""
        return self.header_name(self.typed(table, key, str), key)

    def header_name(self, name: str, key: str) -> str:
        if not name or name != name.strip():
            self.fail(key, "a column name, not empty and without surrounding white space (header names are trimmed)")
        return name

    def word(self, table: dict, key: str) -> str:
        """A required non-empty string, written as the org config writes it (no surrounding white space)."""
        value = self.typed(table, key, str)
        if not value.strip() or value != value.strip():
            self.fail(key, "must be a non-empty string without surrounding white space")
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
