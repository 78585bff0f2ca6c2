"""Mobiles with country codes (`[mobile]`): the one home of the rule.

A mobile value is read as a phone number with the `phonenumbers` package (Google's libphonenumber
metadata), as written: the trimmed value, a leading `00` read as `+`, whatever else it holds (repeated
`+` signs, separators of any kind, letters, other scripts' digits, an extension) read by the package
as the package reads it. A value written without `+` is read first with `default_country`, then with
each of `other_countries`; one written with `+` (or `00`) names its own country and is read once,
with `default_country` as the region. The first reading that `is_valid_number` accepts and whose
region is configured gives the normalised value, its E.164 form without the `+`. No valid reading:
the plain rule's value, and an add of it is 8056.

`read_mobile` is that rule value by value with the package (the reference, tens to hundreds of
microseconds a value). `read_mobiles` gives the same answers at polars speed. It first sorts out the
values it can read as their ASCII digits alone: ASCII digits, with or without leading `+` signs, and
between them only the separators in `SEPARATORS` and at most 2 `STRAY_LETTERS` after the third digit,
at most `MAX_FAST_CHARS` characters. For such a value the package's parse reduces exactly to parsing
those digits (written with `+` or not): it drops what comes before the first digit or `+`, the
separators after it and fewer than 3 letters, finds no extension (every extension form needs an `x`,
3 letters in a row, `#`, `~`, `,` or `;`), and a value whose first 3 digits have only those
separators between them is a viable number. Every other value goes to the package as written.

For the digits, each configured region builds, once, regular expressions and length sets from the
package's own metadata and replays the package's parse and validation steps on columns (trunk
prefix, a country code written without `+`, possible lengths, number types, the region of a shared
country code), each step only on the values still undecided, cheap tests (a length, a prefix) first,
so that a value of the usual shape costs a few regular expressions, not every one of every region.
What those expressions do not model (an international dialling prefix in a national reading, digits
after `+` that start with no country code, which the package reads again with the default region's
international dialling prefix, a national prefix transform rule, fewer than 4 or more than 17
digits) is left undecided and read with the package. The property tests compare both on generated
numbers, on values written every way the package tolerates and on every example number of the
metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, NumberParseException

from pipeline.config import MobileCountries
from pipeline.values.normalize import WHITESPACE, normalize_expr

MIN_FAST_DIGITS = 4
MAX_FAST_DIGITS = 17
"""Digit counts the fast path decides; shorter or longer values (rare junk) go to the package."""
SEPARATORS = " \u00a0-./()"
"""Separators the fast path reads past: each is punctuation to the package (its `_VALID_PUNCTUATION`)
and takes no part in its extension or second-number forms, so the package reads a value of digits and
these as the digits alone. Other separators it tolerates (tabs are not among them) go to the package."""
STRAY_LETTERS = "A-WYZa-wyz"
"""Letters the fast path drops, at most 2 of them and after the first 3 digits, as the package does: it
turns letters into keypad digits only when a value has 3 or more, refuses a letter before the third
digit, and every extension form it knows needs an `x` or 3 letters in a row (`int`)."""
MAX_FAST_CHARS = 64
"""Longer values go to the package (which refuses any value of more than 250 characters)."""
_SEP = "".join(f"\\x{{{ord(c):x}}}" for c in SEPARATORS)
_DIGITS_WRITTEN = (
    f"^\\+*[{_SEP}]*[0-9][{_SEP}]*[0-9][{_SEP}]*[0-9][0-9{_SEP}]*(?:[{STRAY_LETTERS}][0-9{_SEP}]*){{0,2}}$"
)
"""A value the fast path reads as its ASCII digits: leading `+` signs, then 3 digits or more with
separators between them, and at most 2 stray letters after the third digit."""

_TYPE_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
"""The number types `_number_type_helper` tries (mobile apart: skipped when it equals fixed_line)."""


def package_text(value: str) -> str:
    """What the package is given for a mobile value: the value trimmed, a leading '00' read as '+'."""
    text = value.strip()
    return "+" + text[2:] if text.startswith("00") else text


def read_mobile(value: str, countries: MobileCountries) -> str | None:
    """The package's reading of one mobile value: E.164 digits without '+', or None (8056)."""
    text = package_text(value)
    # written with '+' (or '00'): the number names its country, read once with the default region
    regions = countries.regions[:1] if text.startswith("+") else countries.regions
    for region in regions:
        try:
            number = phonenumbers.parse(text, region)
        except NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) in countries.regions:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    return None


def _split(frame: pl.DataFrame, condition: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows where condition holds, and the others (a null condition among them, so no row is lost):
    later steps evaluate only the set they need."""
    mask = frame.with_columns(_split=condition.fill_null(False)).get_column("_split")
    return frame.filter(mask), frame.filter(~mask)


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Parts of one frame split by `_split`, with the same columns, back together (order is not kept)."""
    return pl.concat([p.select(parts[0].columns) for p in parts])


@dataclass(frozen=True)
class Desc:
    """A PhoneNumberDesc as regular-expression text and possible lengths (empty: any length)."""

    pattern: str | None
    lengths: tuple[int, ...]

    def split(self, frame: pl.DataFrame, number: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """`_is_number_matching_desc`: the possible lengths (cheap, first), then a whole-value match."""
        if not self.pattern:
            return frame.clear(), frame
        rejected = []
        if self.lengths:
            frame, short_or_long = _split(frame, pl.col(number).str.len_bytes().is_in(self.lengths))
            rejected.append(short_or_long)
        hit, miss = _split(frame, pl.col(number).str.contains(f"^(?:{self.pattern})$"))
        return hit, _concat([miss, *rejected])


@dataclass(frozen=True)
class RegionRules:
    """One region's metadata, as the polars steps of the package's parse and validation.

    Each step works on the rows that still need it: a regular expression costs about 0.1 µs a value,
    and most values are decided by the first cheap tests (a length, a prefix) of their region.
    """

    region: str
    country_code: str
    general: Desc
    types: tuple[Desc, ...]
    general_lengths: tuple[int, ...]
    local_lengths: tuple[int, ...]
    national_prefix: str | None
    transform: bool
    leading_digits: str | None
    idd: str | None

    def general_match(self, number: pl.Expr) -> pl.Expr:
        """`_match_national_number` against the general description: the pattern only, no lengths."""
        return number.str.contains(f"^(?:{self.general.pattern})$") if self.general.pattern else pl.lit(False)

    def too_long(self, number: pl.Expr) -> pl.Expr:
        """`_test_number_length(...) == TOO_LONG`."""
        length = number.str.len_bytes()
        return ~length.is_in(self.local_lengths) & (length > max(self.general_lengths))

    def length_usable(self, number: pl.Expr) -> pl.Expr:
        """`_test_number_length` not in (TOO_SHORT, IS_POSSIBLE_LOCAL_ONLY, INVALID_LENGTH)."""
        length = number.str.len_bytes()
        return ~length.is_in(self.local_lengths) & (length.is_in(self.general_lengths) | self.too_long(number))

    def prefix_undecided(self, number: pl.Expr) -> pl.Expr:
        """A national prefix with a transform rule: the fast path leaves the value to the package."""
        if not (self.transform and self.national_prefix):
            return pl.lit(False)
        return number.str.contains(f"^(?:{self.national_prefix})")

    def strip_national_prefix(self, frame: pl.DataFrame, number: str, out: str) -> pl.DataFrame:
        """`_maybe_strip_national_prefix_carrier_code` without transform rules (those are undecided).

        The prefix is stripped unless the value matches the general pattern and the stripped one
        does not; the patterns are matched only on values that start with the prefix.
        """
        if not self.national_prefix:
            return frame.with_columns(pl.col(number).alias(out))
        anchored = f"^(?:{self.national_prefix})"
        prefixed, plain = _split(frame, pl.col(number).str.contains(anchored))
        plain = plain.with_columns(_stripped=pl.lit(None, dtype=pl.String))
        prefixed = prefixed.with_columns(_stripped=pl.col(number).str.replace(anchored, ""))
        matching, other = _split(prefixed, self.general_match(pl.col(number)))
        kept = ~self.general_match(pl.col("_stripped"))
        return _concat(
            [
                plain.with_columns(pl.col(number).alias(out)),
                matching.with_columns(pl.when(kept).then(pl.col(number)).otherwise("_stripped").alias(out)),
                other.with_columns(pl.col("_stripped").alias(out)),
            ]
        ).drop("_stripped")

    def final_strip(self, frame: pl.DataFrame, national: str, out: str) -> pl.DataFrame:
        """parse()'s last national prefix strip, kept only when the stripped length is usable."""
        frame = self.strip_national_prefix(frame, national, "_final")
        usable = self.length_usable(pl.col("_final"))
        return frame.with_columns(pl.when(usable).then(pl.col("_final")).otherwise(pl.col(national)).alias(out)).drop(
            "_final"
        )

    def type_valid(self, frame: pl.DataFrame, nsn: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """`_number_type_helper(nsn) != UNKNOWN` (the general description, then any number type): the
        rows with a type and the others. Types are tried one after another on the rows still untyped,
        mobile and fixed line first (the commonest)."""
        candidates, untyped = self.general.split(frame, nsn)
        typed = []
        for desc in reversed(self.types):
            if candidates.height == 0:
                break
            hit, candidates = desc.split(candidates, nsn)
            typed.append(hit)
        return _concat([candidates.clear(), *typed]), _concat([untyped, candidates])

    def claims(self, nsn: pl.Expr) -> pl.Expr:
        """Whether `_region_code_for_number_from_list` stops at this region (regions with leading digits)."""
        assert self.leading_digits is not None
        return nsn.str.contains(f"^(?:{self.leading_digits})")


def _desc(desc: object | None) -> Desc:
    if desc is None:
        return Desc(None, ())
    return Desc(getattr(desc, "national_number_pattern", None), tuple(getattr(desc, "possible_length", ()) or ()))


@cache
def region_rules(region: str) -> RegionRules:
    """The rules of one region, built once from the package's metadata."""
    md = PhoneMetadata.metadata_for_region(region)
    if md is None or md.general_desc is None:
        raise ValueError(f"no phone-number metadata for region {region!r}")
    types = [_desc(getattr(md, name)) for name in _TYPE_DESCS]
    if not md.same_mobile_and_fixed_line_pattern:
        types.append(_desc(md.mobile))
    general = _desc(md.general_desc)
    return RegionRules(
        region=region,
        country_code=str(md.country_code),
        general=general,
        types=tuple(d for d in types if d.pattern),
        general_lengths=general.lengths,
        local_lengths=tuple(md.general_desc.possible_length_local_only or ()),
        national_prefix=md.national_prefix_for_parsing or None,
        transform=bool(md.national_prefix_transform_rule),
        leading_digits=md.leading_digits,
        idd=md.international_prefix,
    )


def _main_region(country_code: str) -> str:
    return COUNTRY_CODE_TO_REGION_CODE[int(country_code)][0]


def _accepted(
    frame: pl.DataFrame, nsn: str, country_code: str, countries: MobileCountries
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows whose nsn `is_valid_number` accepts for this country code in a configured region,
    and the others."""
    regions = [r for r in COUNTRY_CODE_TO_REGION_CODE[int(country_code)] if PhoneMetadata.metadata_for_region(r)]
    last = max((i for i, r in enumerate(regions) if r in countries.regions), default=-1)
    accepted, refused = [frame.clear()], []
    rest = frame
    # `_region_code_for_number_from_list`: the first region that claims the number is its region;
    # a region without leading digits claims the numbers its types describe
    for region in regions[: last + 1]:
        rules = region_rules(region)
        if rules.leading_digits is not None and len(regions) > 1:
            claimed, rest = _split(rest, rules.claims(pl.col(nsn)))
            valid, invalid = rules.type_valid(claimed, nsn)
            refused.append(invalid)
        else:
            valid, rest = rules.type_valid(rest, nsn)
        (accepted if region in countries.regions else refused).append(valid)
    return _concat(accepted), _concat([rest, *refused])


def _with_e164(frame: pl.DataFrame, nsn: str, country_code: str, countries: MobileCountries) -> pl.DataFrame:
    """Adds mobile: the E.164 digits of the nsn column where the package would accept it, else null."""
    length = pl.col(nsn).str.len_bytes()
    candidates, rejected = _split(frame, (length >= 2) & (length <= MAX_FAST_DIGITS))
    accepted, refused = _accepted(candidates, nsn, country_code, countries)
    none = pl.lit(None, dtype=pl.String)
    return _concat(
        [
            accepted.with_columns(mobile=pl.lit(country_code) + pl.col(nsn)),
            refused.with_columns(mobile=none),
            rejected.with_columns(mobile=none),
        ]
    )


def _national_reading(frame: pl.DataFrame, region: str, countries: MobileCountries) -> pl.DataFrame:
    """`parse(digits, region)` then validation, for digits written without '+': adds undecided, mobile.

    Rows split by what the package would do with them: digits that start with the region's country
    code, and among those the ones read as written with the code (`_maybe_extract_country_code`).
    """
    rules = region_rules(region)
    main = region_rules(_main_region(rules.country_code))
    cc = rules.country_code
    digits = pl.col("digits")
    undecided = rules.prefix_undecided(digits)
    if rules.idd:
        undecided = undecided | digits.str.contains(f"^(?:{rules.idd})")
    coded, plain = _split(frame, digits.str.starts_with(cc))
    coded = rules.strip_national_prefix(coded.with_columns(_after=digits.str.slice(len(cc))), "_after", "_without")
    long, other = _split(coded, rules.too_long(digits))
    maybe, not_written = _split(other, ~rules.general_match(digits))
    matching, not_matching = _split(maybe, rules.general_match(pl.col("_without")))
    written = _concat([long, matching])
    not_written = _concat([not_written, not_matching])
    undecided_coded = undecided | rules.prefix_undecided(pl.col("_after"))
    written = written.with_columns(undecided=undecided_coded | main.prefix_undecided(pl.col("_without")))
    not_written = not_written.with_columns(undecided=undecided_coded)
    plain = plain.with_columns(undecided=undecided)
    # undecided values go to the package whatever the fast path would read
    none = pl.lit(None, dtype=pl.String)
    parts = [p.filter("undecided").with_columns(mobile=none) for p in (written, not_written, plain)]
    # once it has found the country code, the package goes on with the main region's metadata
    written = main.final_strip(written.filter(~pl.col("undecided")), "_without", "_nsn")
    read_plain = _concat([not_written, plain.with_columns(_after=none, _without=none)]).filter(~pl.col("undecided"))
    read_plain = rules.final_strip(read_plain, "digits", "_nsn")
    parts += [_with_e164(written, "_nsn", cc, countries), _with_e164(read_plain, "_nsn", cc, countries)]
    return _concat([p.select(*frame.columns, "undecided", "mobile") for p in parts])


def _international_reading(frame: pl.DataFrame, countries: MobileCountries) -> pl.DataFrame:
    """`parse('+' + digits)` then validation: only the configured country codes can be accepted."""
    parts = []
    rest = frame
    for cc in dict.fromkeys(region_rules(r).country_code for r in countries.regions):
        main = region_rules(_main_region(cc))
        here, rest = _split(rest, pl.col("digits").str.starts_with(cc))
        here = here.with_columns(_national=pl.col("digits").str.slice(len(cc)))
        here = main.final_strip(here, "_national", "_nsn")
        undecided = main.prefix_undecided(pl.col("_national")) | pl.lit(_shorter_code(cc))
        here = _with_e164(here.with_columns(undecided=undecided), "_nsn", cc, countries)
        parts.append(here.drop("_national", "_nsn"))
    # digits of no configured country: a number of another country (no reading), unless they start
    # with no country code at all; then the package reads them again with the default region's
    # international dialling prefix (`+0091...` read with IN), and so does the fast path: undecided
    parts.append(
        rest.with_columns(undecided=~_has_country_code(pl.col("digits")), mobile=pl.lit(None, dtype=pl.String))
    )
    return _concat(parts)


_COUNTRY_CODES = tuple(str(c) for c in COUNTRY_CODE_TO_REGION_CODE)


def _has_country_code(digits: pl.Expr) -> pl.Expr:
    """`_extract_country_code(digits) != 0`: the first 1, 2 or 3 digits are a country code."""
    return pl.any_horizontal(
        digits.str.slice(0, n).is_in([c for c in _COUNTRY_CODES if len(c) == n]) for n in range(1, 4)
    )


@cache
def _shorter_code(country_code: str) -> bool:
    """Whether a proper prefix of the code is a country code too (never, today; then the package reads)."""
    return any(int(country_code[:i]) in COUNTRY_CODE_TO_REGION_CODE for i in range(1, len(country_code)))


def _fast_readings(frame: pl.DataFrame, countries: MobileCountries) -> pl.DataFrame:
    """Columns value, undecided and mobile; region by region, the values a reading decides leave the
    frame, so later regions only see what earlier ones refused."""
    decided = [_international_reading(frame.filter(pl.col("international")), countries)]
    national = frame.filter(~pl.col("international"))
    for region in countries.regions:
        if national.height == 0:
            break
        national = _national_reading(national, region, countries)
        done = pl.col("undecided") | pl.col("mobile").is_not_null()
        decided.append(national.filter(done))
        national = national.filter(~done).drop("undecided", "mobile")
    decided.append(national.with_columns(undecided=pl.lit(False), mobile=pl.lit(None, dtype=pl.String)))
    return pl.concat([d.select("value", "undecided", "mobile") for d in decided])


def read_mobiles(values: pl.Series, countries: MobileCountries, distinct: bool = False) -> pl.DataFrame:
    """The reading of each distinct trimmed value: columns value and mobile (E.164 digits, null: none).

    Equal to `read_mobile` on every value; the package itself reads only what the fast path leaves.
    `distinct`: the values are already distinct (a DISTINCT query), so they are not hashed again.
    """
    frame = pl.DataFrame({"value": values if distinct else values.unique()}, schema={"value": pl.String})
    # a value of ASCII digits not starting with '00' is its own digits, written without '+': the
    # expressions below (costly on millions of values) run only on the others
    bare, written = _split(frame, pl.col("value").str.contains("^[0-9]+$") & ~pl.col("value").str.starts_with("00"))
    text = pl.col("value").str.strip_chars(WHITESPACE)
    written = written.with_columns(
        _text=pl.when(text.str.starts_with("00")).then(pl.lit("+") + text.str.slice(2)).otherwise(text)
    )
    simple, odd = _split(
        written, pl.col("_text").str.contains(_DIGITS_WRITTEN) & (pl.col("_text").str.len_chars() <= MAX_FAST_CHARS)
    )
    numbers = pl.concat(
        [
            bare.with_columns(digits=pl.col("value"), international=pl.lit(False)),
            simple.select(
                "value",
                digits=pl.col("_text").str.replace_all("[^0-9]", ""),
                international=pl.col("_text").str.starts_with("+"),
            ),
        ]
    )
    in_range = pl.col("digits").str.len_bytes().is_between(MIN_FAST_DIGITS, MAX_FAST_DIGITS)
    fast = _fast_readings(numbers.filter(in_range), countries)
    rest = pl.concat(
        [odd.select("value"), numbers.filter(~in_range).select("value"), fast.filter("undecided").select("value")]
    )
    by_package = [None if v is None else read_mobile(v, countries) for v in rest.get_column("value").to_list()]
    return pl.concat(
        [
            fast.filter(~pl.col("undecided")).select("value", "mobile"),
            rest.with_columns(mobile=pl.Series(by_package, dtype=pl.String)),
        ]
    )


def normalised_mobiles(values: pl.Series, countries: MobileCountries, distinct: bool = False) -> pl.DataFrame:
    """For each distinct trimmed value: value, normalised (SPEC section 2 with `[mobile]`) and valid.

    A value with no valid reading keeps the plain rule's value, so a malformed mobile already in the
    store can still be found and removed; only an add of it is refused (8056).
    """
    read, unread = _split(read_mobiles(values, countries, distinct), pl.col("mobile").is_not_null())
    return pl.concat(
        [
            read.select("value", normalised="mobile", valid=pl.lit(True)),
            unread.select("value", normalised=normalize_expr(pl.lit("mobile"), pl.col("value")), valid=pl.lit(False)),
        ]
    )


def with_countries(frame: pl.DataFrame, countries: MobileCountries, fields: list[tuple[str, str, str]]) -> pl.DataFrame:
    """Re-normalise the mobile fields of a frame with the countries; fields are (type, trimmed, out).

    Each `out` column takes the normalised value where its type is mobile, and `<out>_mobile_valid`
    says whether the value had a valid reading. The package's work is done once per distinct value,
    and only the mobile rows are looked up (then written back by position), not the whole batch.
    """
    masks = {t: (frame.get_column(t) == "mobile").fill_null(False) for t, _, _ in fields}
    values = pl.concat([frame.get_column(v).filter(masks[t]) for t, v, _ in fields])
    table = normalised_mobiles(values, countries)
    columns = []
    for type_col, trimmed, out in fields:
        mask = masks[type_col]
        rows = pl.DataFrame({"_row": mask.arg_true(), "value": frame.get_column(trimmed).filter(mask)})
        found = rows.join(table, on="value", how="left", nulls_equal=False)
        positions = found.get_column("_row")
        columns += [
            frame.get_column(out).scatter(positions, found.get_column("normalised")),
            pl.zeros(frame.height, dtype=pl.Boolean, eager=True)
            .scatter(positions, found.get_column("valid").fill_null(False))
            .alias(f"{out}_mobile_valid"),
        ]
    return frame.with_columns(columns)
