"""`loyalty-bulk validate`: read and check request files against the org config, no store needed.

Writes errors.csv (one row per failed row, raw input echoed) and summary.json to the reports folder.
A file-level error (InputFileError) or a broken config (ConfigError) propagates as a whole-run failure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.catalog import CATALOG
from pipeline.config import load_config
from pipeline.engine.check import check_requests
from pipeline.errors import EXIT_OK, EXIT_ROWS_FAILED
from pipeline.files import write_csv, write_json
from pipeline.input.read import InputFile, InputLayout, read_requests
from pipeline.reports.frames import error_report

TOP_CODES = 5


@dataclass(frozen=True)
class CodeCount:
    code: int
    name: str
    count: int


@dataclass(frozen=True)
class ValidateResult:
    """What a validate run found: the same object renders the console summary and summary.json."""

    config_path: str
    files: tuple[InputFile, ...]
    rows: int
    rows_failed: int
    error_counts: tuple[CodeCount, ...]
    """Failed rows by error code, most frequent first (ties by code)."""
    errors_csv: Path
    summary_json: Path
    seconds: float

    @property
    def rows_passed(self) -> int:
        return self.rows - self.rows_failed

    @property
    def exit_code(self) -> int:
        return EXIT_ROWS_FAILED if self.rows_failed else EXIT_OK

    def summary(self) -> dict[str, Any]:
        """The summary.json document."""
        return {
            "command": "validate",
            "config": self.config_path,
            "files": [{"path": f.path, "sha256": f.sha256, "rows": f.rows, "format": f.format} for f in self.files],
            "rows": self.rows,
            "rows_checked": self.rows,
            "rows_passed": self.rows_passed,
            "rows_failed": self.rows_failed,
            "errors_by_code": {str(c.code): {"name": c.name, "count": c.count} for c in self.error_counts},
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
        }

    def render(self) -> str:
        """A short human summary: rows, failures, the most frequent codes, where the reports are."""
        lines = [
            f"checked {self.rows} row(s) in {len(self.files)} file(s): "
            f"{self.rows_passed} passed, {self.rows_failed} failed ({self.seconds:.2f} s)"
        ]
        lines.extend(f"  {count.code} {count.name}: {count.count}" for count in self.error_counts[:TOP_CODES])
        if len(self.error_counts) > TOP_CODES:
            lines.append(f"  ... and {len(self.error_counts) - TOP_CODES} more code(s), see summary.json")
        lines.append(f"reports: {self.errors_csv} and {self.summary_json}")
        return "\n".join(lines)


def validate_files(
    config_path: Path | str, paths: Sequence[Path | str], reports_dir: Path | str, layout: InputLayout | None = None
) -> ValidateResult:
    """Check request files against an org config and write errors.csv and summary.json.

    `layout` reads the files as a run would (the command line's --delimiter and --encoding)."""
    started = time.perf_counter()
    config = load_config(config_path)
    batch = read_requests(paths, layout)
    result = check_requests(batch.frame, config)
    reports = Path(reports_dir)
    errors_csv = write_csv(error_report(batch.frame, result.errors), reports / "errors.csv")
    counts = result.errors.group_by("error_code").len().sort(["len", "error_code"], descending=[True, False])
    validated = ValidateResult(
        config_path=str(config_path),
        files=batch.files,
        rows=batch.frame.height,
        rows_failed=result.errors.height,
        error_counts=tuple(CodeCount(code, CATALOG[code].name, n) for code, n in counts.iter_rows()),
        errors_csv=errors_csv,
        summary_json=reports / "summary.json",
        seconds=time.perf_counter() - started,
    )
    write_json(validated.summary(), validated.summary_json)
    return validated
