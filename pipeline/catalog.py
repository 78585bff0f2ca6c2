"""The error and warning catalog: one entry per code, read by checks, engine, reports, README and tests.

Codes from the platform's own catalog keep their numbers; codes of this pipeline are 7xxx.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

import polars as pl

Stage = Literal["file", "check", "resolve", "apply"]
Kind = Literal["error", "warning"]


@dataclass(frozen=True)
class CatalogEntry:
    code: int
    name: str
    stage: Stage
    kind: Kind
    template: str
    meaning: str

    def message(self, **values: object) -> str:
        """The message for one row; unknown placeholders stay visible rather than failing."""
        return self.template.format_map(_Lenient(values))

    def message_expr(self, **values: pl.Expr | str) -> pl.Expr:
        """The message as a polars expression over a frame's rows; unknown placeholders stay visible."""
        parts: list[pl.Expr] = []
        for literal, name, _spec, _conv in string.Formatter().parse(self.template):
            if literal:
                parts.append(pl.lit(literal))
            if name is not None:
                value = values.get(name, "{" + name + "}")
                parts.append(pl.lit(value) if isinstance(value, str) else value.cast(pl.String).fill_null(""))
        return pl.concat_str(parts) if parts else pl.lit("")


class _Lenient(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_ENTRIES = [
    CatalogEntry(
        7101,
        "FILE_ENCODING",
        "file",
        "error",
        "{file}: {reason}",
        "the file is not valid UTF-8 (or its gzip stream is broken)",
    ),
    CatalogEntry(
        7102,
        "FILE_FORMAT",
        "file",
        "error",
        "{file}: {reason}",
        "the file is neither CSV nor Parquet, or cannot be parsed as one",
    ),
    CatalogEntry(7103, "MISSING_COLUMN", "file", "error", "{file}: {reason}", "a required column is missing"),
    CatalogEntry(
        7104,
        "UNKNOWN_COLUMN",
        "file",
        "error",
        "{file}: {reason}",
        "a column the request layout does not know (and no job mapping names)",
    ),
    CatalogEntry(7105, "NO_HEADER", "file", "error", "{file}: {reason}", "the file is empty or has no header row"),
    CatalogEntry(
        8003,
        "INVALID_SOURCE",
        "check",
        "error",
        "source '{value}' is not configured for this org",
        "source unknown to the org config",
    ),
    CatalogEntry(
        8045,
        "ACCOUNT_ID_MISSING",
        "check",
        "error",
        "source '{source}' has several accounts; account_id is required",
        "multi-account source without account_id",
    ),
    CatalogEntry(
        8127,
        "INVALID_ACCOUNT",
        "check",
        "error",
        "account_id '{value}' is not valid for source '{source}'",
        "account_id unknown for the source, or given for a single-account source",
    ),
    CatalogEntry(
        7001,
        "INVALID_FIELD",
        "check",
        "error",
        "{field}: {reason}",
        "a required field is missing or a field is malformed (the report names the field)",
    ),
    CatalogEntry(
        7002,
        "INVALID_ACTION",
        "check",
        "error",
        "action '{value}' {reason}",
        "action is not add, remove or replace, or replace on a card",
    ),
    CatalogEntry(
        7003,
        "INVALID_CUSTOMER_REFERENCE",
        "check",
        "error",
        "{reason}",
        "neither customer_id nor a complete lookup pair, or both",
    ),
    CatalogEntry(
        7004,
        "ID_TYPE_NOT_ALLOWED",
        "check",
        "error",
        "{field} '{value}' is not accepted by source '{source}'",
        "id_type (or lookup_type) unknown, or not accepted by the source",
    ),
    CatalogEntry(
        7005,
        "BLOCKED_VALUE",
        "check",
        "error",
        "{id_type} value '{value}' is on the org's blocked list",
        "the normalised value is on the org's blocked list",
    ),
    CatalogEntry(8055, "INVALID_EMAIL", "check", "error", "'{value}' is not a valid email", "email malformed"),
    CatalogEntry(
        8056, "INVALID_MOBILE", "check", "error", "'{value}' is not a valid mobile ({rule})", "mobile malformed"
    ),
    CatalogEntry(
        8064,
        "INVALID_EXTERNAL_ID",
        "check",
        "error",
        "'{value}' is not a valid externalId (1 to 64 characters, no white space)",
        "externalId malformed",
    ),
    CatalogEntry(
        8086,
        "INVALID_STATUS_LABEL",
        "check",
        "error",
        "{reason}",
        "status_label missing when adding a card, or unknown",
    ),
    CatalogEntry(
        3004, "SERIES_NOT_FOUND", "check", "error", "{reason}", "series_id missing when adding a card, or unknown"
    ),
    CatalogEntry(
        7011,
        "STATUS_LABEL_NOT_ALLOWED",
        "check",
        "error",
        "status label '{value}' maps to {status}, which does not fit {operation}",
        "the label's standard status does not fit the card operation",
    ),
    CatalogEntry(
        8015,
        "CUSTOMER_NOT_FOUND",
        "resolve",
        "error",
        "no customer for {field} '{value}'",
        "no customer for the given id or identifier",
    ),
    CatalogEntry(
        8008,
        "IDENTIFIER_TAKEN_IN_SCOPE",
        "apply",
        "error",
        "{id_type} '{value}' is held by customer {holder} in the same scope",
        "another customer holds the value in the same scope",
    ),
    CatalogEntry(
        7006,
        "SLOT_OCCUPIED",
        "apply",
        "error",
        "customer {customer} already holds another {id_type} in this scope; remove it first",
        "the customer holds another value of this type in this scope",
    ),
    CatalogEntry(
        8074,
        "AMBIGUOUS_HOLDERS",
        "apply",
        "error",
        "{id_type} '{value}' is held by several customers in other scopes",
        "several customers hold the value in other scopes",
    ),
    CatalogEntry(
        7007,
        "MERGE_DISABLED",
        "apply",
        "error",
        "adding {id_type} '{value}' would merge customer {customer} into {holder}, and merging is off",
        "a merge would be needed and merging is off",
    ),
    CatalogEntry(
        8066,
        "MERGE_SCOPE_CLASH",
        "apply",
        "error",
        "customers {customer} and {holder} both hold identifiers in a common scope",
        "victim and survivor both hold identifiers in a common scope",
    ),
    CatalogEntry(
        7008,
        "MERGE_LIMIT",
        "apply",
        "error",
        "customer {holder} already survived {limit} merges in this run",
        "the survivor reached its merge limit for this run",
    ),
    CatalogEntry(
        8068,
        "CAMPAIGN_HOLDER",
        "apply",
        "error",
        "{id_type} '{value}' is held by a campaign customer",
        "a campaign customer holds the value (error when reuse is off, warning when on)",
    ),
    CatalogEntry(
        7009,
        "IDENTIFIER_NOT_ON_CUSTOMER",
        "apply",
        "error",
        "customer {customer} does not hold {id_type} '{value}' in this scope",
        "remove of a value the customer does not hold",
    ),
    CatalogEntry(
        7010,
        "LAST_IDENTIFIER",
        "apply",
        "error",
        "removing {id_type} '{value}' would leave customer {customer} with no identifier",
        "remove would leave the customer with no identifier",
    ),
    CatalogEntry(
        3000,
        "CARD_SERIES_MISMATCH",
        "apply",
        "error",
        "card '{value}' belongs to series {series}",
        "the card belongs to another series",
    ),
    CatalogEntry(
        3010,
        "CARD_NOT_FOUND",
        "apply",
        "error",
        "card '{value}' is not in the store",
        "the card number is not in the store",
    ),
    CatalogEntry(8087, "CARD_CLOSED", "apply", "error", "card '{value}' is {status}", "the card is EXPIRED or DELETED"),
    CatalogEntry(
        3027,
        "CARD_HELD_BY_OTHER",
        "apply",
        "error",
        "card '{value}' is linked to another customer",
        "the card is linked to another customer",
    ),
    CatalogEntry(
        3031,
        "CARD_NOT_ON_CUSTOMER",
        "apply",
        "error",
        "card '{value}' is not linked to customer {customer}",
        "delink of a card the customer does not hold",
    ),
    CatalogEntry(
        3036,
        "SERIES_CARD_LIMIT",
        "apply",
        "error",
        "customer {customer} already has {limit} active cards in series {series}",
        "the series' active-card maximum is reached",
    ),
    CatalogEntry(
        3039,
        "ORG_CARD_LIMIT",
        "apply",
        "error",
        "customer {customer} already has {limit} active cards",
        "the org's active-card maximum is reached",
    ),
    CatalogEntry(
        8051,
        "MERGED",
        "apply",
        "warning",
        "customer {victim} was merged into {survivor}",
        "the row merged its target into the holder",
    ),
    CatalogEntry(
        91009,
        "FOLLOWED_MERGE",
        "resolve",
        "warning",
        "customer {customer} was merged; its survivor {survivor} was used",
        "the target was a merged customer; its survivor was used",
    ),
    CatalogEntry(
        8070,
        "ALREADY_PRESENT",
        "apply",
        "warning",
        "the customer already holds this identifier",
        "nothing to change (other identifier types)",
    ),
    CatalogEntry(
        8071,
        "ALREADY_PRESENT_MOBILE",
        "apply",
        "warning",
        "the customer already holds this mobile",
        "nothing to change (mobile)",
    ),
    CatalogEntry(
        8072,
        "ALREADY_PRESENT_EMAIL",
        "apply",
        "warning",
        "the customer already holds this email",
        "nothing to change (email)",
    ),
    CatalogEntry(
        8073,
        "ALREADY_PRESENT_EXTERNAL_ID",
        "apply",
        "warning",
        "the customer already holds this externalId",
        "nothing to change (externalId)",
    ),
    CatalogEntry(
        3012,
        "ALREADY_PRESENT_CARD",
        "apply",
        "warning",
        "the customer already holds this card with this label",
        "nothing to change (card)",
    ),
]

CATALOG: dict[int, CatalogEntry] = {entry.code: entry for entry in _ENTRIES}

ALREADY_PRESENT_WARNING = {"mobile": 8071, "email": 8072, "externalId": 8073}
"""The 'unchanged' warning for an identifier type; every other type gets 8070."""


def already_present_code(id_type: str) -> int:
    return ALREADY_PRESENT_WARNING.get(id_type, 3012 if id_type == "cardnumber" else 8070)


def error_codes(stage: Stage | None = None) -> list[int]:
    """Error (not warning) codes, optionally of one stage, in catalog order."""
    return [e.code for e in _ENTRIES if e.kind == "error" and (stage is None or e.stage == stage)]


def markdown_table() -> str:
    """The README's error-code table, generated from the catalog (tests keep the two equal)."""
    lines = ["| code | name | stage | kind | when |", "|---|---|---|---|---|"]
    lines += [f"| {e.code} | {e.name} | {e.stage} | {e.kind} | {e.meaning} |" for e in _ENTRIES]
    return "\n".join(lines)
