"""Failures of a whole command, each mapped to one exit code of SPEC section 5.

Row problems are data (see catalog.py); these exceptions are only for the run as a whole.
Every message says what state is left behind.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERNAL = 4
EXIT_MEANINGS = {
    EXIT_OK: "every row succeeded",
    EXIT_ROWS_FAILED: "the run completed and some rows failed",
    EXIT_USAGE: "usage or config error; nothing done",
    EXIT_REFUSED: "refused or aborted; nothing applied",
    EXIT_INTERNAL: "internal failure; nothing applied",
}
"""Each exit code in a few words (summary.html says what a run's code means)."""


class LoyaltyBulkError(Exception):
    exit_code = EXIT_INTERNAL


class ConfigError(LoyaltyBulkError):
    """The org config or a job file breaks its layout; nothing was done."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path | str, key: str, reason: str):
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: key '{key}': {reason}")


FILE_ENCODING, FILE_FORMAT, MISSING_COLUMN, UNKNOWN_COLUMN, NO_HEADER = 7101, 7102, 7103, 7104, 7105
"""The codes an InputFileError carries (catalog.py names them); every reader of input/ raises with these."""


class InputFileError(LoyaltyBulkError):
    """A request file cannot be read as a whole; the run applies nothing."""

    exit_code = EXIT_REFUSED

    def __init__(self, path: Path | str, code: int, reason: str, line: int | None = None):
        self.path, self.code, self.reason, self.line = str(path), code, reason, line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason} (error {code}); nothing was applied")


class RequestFilesRefused(InputFileError):
    """Several request files were refused; carries every failure, and the first one's code and line."""

    def __init__(self, errors: Sequence[InputFileError]):
        first = errors[0]
        super().__init__(first.path, first.code, first.reason, first.line)
        self.errors = tuple(errors)
        self.args = (
            f"{len(errors)} request files were refused; nothing was applied:\n"
            + "\n".join(f"  {_where(e)}: {e.reason} (error {e.code})" for e in errors),
        )


def _where(error: InputFileError) -> str:
    return f"{error.path}, line {error.line}" if error.line is not None else error.path


class NotACallBody(ValueError):
    """A JSON value that is not a changeIdentifier call of SPEC section 2's shape; the message says why.

    Not a command's failure by itself: the NDJSON reader turns it into an InputFileError naming the line, the
    emulator into a 400 answer."""


class StoreError(LoyaltyBulkError):
    """The store refused the command (busy, already applied, invariant broken); nothing was applied."""

    exit_code = EXIT_REFUSED


class StoreBusy(StoreError):
    """Another process holds the store (DuckDB's file lock); `holder` names its PID when known."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


class SnapshotRefused(StoreError):
    """A snapshot breaks an invariant of SPEC section 1; no store was written."""

    def __init__(self, snapshot: Path | str, findings: int, report: Path | str):
        self.snapshot, self.findings, self.report = str(snapshot), findings, str(report)
        super().__init__(
            f"snapshot {snapshot} breaks {findings} invariant finding(s); see {report}; no store was written"
        )


class ComponentTooLarge(StoreError):
    """A batch's largest connected component of interacting rows is larger than the engine's bound (the Spark
    engine: what one executor replays in order); nothing was decided (exit 3)."""


class JournalBusy(StoreError):
    """Another push holds the journal; nothing was sent."""


class PushUsageError(LoyaltyBulkError):
    """No API, no credentials or a bad option: exit 2, nothing sent."""

    exit_code = EXIT_USAGE


class InternalError(LoyaltyBulkError):
    exit_code = EXIT_INTERNAL


class StageFailed(InternalError):
    """An unexpected failure inside a stage of a run, named with the state it leaves (exit 4)."""

    def __init__(self, stage: str, cause: BaseException, left: str):
        self.stage, self.left = stage, left
        super().__init__(f"the {stage} stage failed: {type(cause).__name__}: {cause}; {left}")


NOTHING_APPLIED = "nothing was applied"


@contextmanager
def stage_failure(stage: str, left: str = NOTHING_APPLIED) -> Iterator[None]:
    """Turn an unexpected failure inside the block into StageFailed, naming the stage and the state it leaves.
    The library's own errors already say both, and pass unchanged."""
    try:
        yield
    except LoyaltyBulkError:
        raise
    except Exception as exc:
        raise StageFailed(stage, exc, left) from exc
