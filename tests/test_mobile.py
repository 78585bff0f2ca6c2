"""`[mobile]`: the fast path (pipeline.values.mobile.read_mobiles) equals the phonenumbers package on every value.

The package is called here directly (mobile_reference.read_with_package), never through the pipeline, on
values written every way the package tolerates: repeated `+` signs, `00` after `+`, separators of every
kind, letters (stray ones and vanity numbers), other scripts' digits, extensions, leading and trailing junk.
"""

from __future__ import annotations

import itertools

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata

import pipeline.values.mobile as mobile
from mobile_reference import read_with_package
from pipeline.config import MobileCountries
from pipeline.values.mobile import normalised_mobiles, read_mobile, read_mobiles

REGIONS = ("IN", "SG", "GB", "US", "CN", "DE")
OTHER_REGIONS = ("CA", "JE", "HK", "JP", "AU", "FR", "AR", "MX", "BR", "IT", "RU", "KZ")
TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def metadata(region: str):
    return PhoneMetadata.metadata_for_region(region)


def example_numbers(region: str) -> list[str]:
    """Every example number the package's metadata carries for the region (national significant form)."""
    md = metadata(region)
    return [d.example_number for d in (getattr(md, t) for t in TYPES) if d is not None and d.example_number]


def written_forms(region: str, national: str) -> list[str]:
    """A national number written the ways request files write it."""
    cc = str(metadata(region).country_code)
    prefix = metadata(region).national_prefix or ""
    return [
        national,
        prefix + national,
        cc + national,
        cc + prefix + national,
        "+" + cc + national,
        "+" + cc + " " + prefix + national,
        "00" + cc + national,
        f"({national[:3]}) {national[3:6]}-{national[6:]}",
        "+" + cc + "-" + national[:4] + "." + national[4:],
        national[:-1],
        national + "7",
        national + "12345678",
        "0" + national,
        "+" + national,
        "00" + national,
        # written the ways the package tolerates beyond the plain rule's separators
        "++" + cc + national,
        "+00" + cc + national,
        "00+" + cc + " " + national,
        "tel:+" + cc + national,
        "(+" + cc + ") " + national,
        "+" + cc + "/" + national[:3] + "/" + national[3:],
        "\uff0b" + "".join(chr(0xFF10 + int(d)) for d in cc + national),
        "+" + cc + " " + national + " ext. 12",
        national[:4] + "O" + national[4:],
        national[:3] + "\t" + national[3:],
    ]


def assert_same(values: list[str], countries: MobileCountries) -> None:
    fast = dict(read_mobiles(pl.Series(values, dtype=pl.String), countries).iter_rows())
    mismatches = [
        (v, fast[v], read_with_package(v, countries)) for v in values if fast[v] != read_with_package(v, countries)
    ]
    assert not mismatches, mismatches[:10]


COUNTRY_LISTS = [
    MobileCountries(default, tuple(others))
    for default, others in [
        ("IN", ["SG"]),
        ("SG", ["IN"]),
        ("GB", []),
        ("US", []),
        ("CN", ["GB", "IN"]),
        ("DE", ["US", "GB"]),
        ("US", ["CA", "GB"]),
        ("JE", ["GB"]),
        ("GB", ["JE", "IM", "GG"]),
        ("JP", ["AR", "MX"]),
    ]
]


@pytest.mark.parametrize("countries", COUNTRY_LISTS, ids=lambda c: c.key)
def test_every_example_number_of_the_metadata_reads_as_the_package_reads_it(countries):
    values = sorted(
        {
            form
            for region in REGIONS + OTHER_REGIONS
            for e in example_numbers(region)
            for form in written_forms(region, e)
        }
    )
    assert len(values) > 1000
    assert_same(values, countries)
    # the examples are valid numbers: most of them must have a reading, or the test proves little
    read = [v for v in values if read_with_package(v, countries) is not None]
    assert len(read) > 50


digits = st.text("0123456789", min_size=0, max_size=20)


@st.composite
def written_mobiles(draw):
    """National forms with and without trunk prefix, '+' and '00', separators, lengths, junk."""
    region = draw(st.sampled_from(REGIONS + OTHER_REGIONS))
    md = metadata(region)
    cc = str(md.country_code)
    examples = example_numbers(region)
    base = draw(st.sampled_from(examples)) if examples and draw(st.booleans()) else draw(digits)
    # change a few digits of an example: neighbours of valid numbers are where the rules differ
    chars = list(base)
    for _ in range(draw(st.integers(0, 3))):
        if chars:
            chars[draw(st.integers(0, len(chars) - 1))] = draw(st.sampled_from("0123456789"))
    national = "".join(chars)
    national = national[: draw(st.integers(0, len(national)))] if draw(st.integers(0, 5)) == 0 else national
    national += draw(digits) if draw(st.integers(0, 5)) == 0 else ""
    lead = draw(st.sampled_from(["", "", "0", md.national_prefix or "", cc, cc + "0", "1", "011", "001", "0091"]))
    plus = draw(st.sampled_from(["", "", "+", "00", "++", "+0"]))
    value = plus + lead + national
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(value)))
        value = value[:cut] + draw(st.sampled_from([" ", "-", ".", "(", ")", " - ", "\u00a0"])) + value[cut:]
    if draw(st.integers(0, 8)) == 0:
        value = draw(st.sampled_from(["x", "a", "#", "\u0661", "*", "ext"])).join([value, draw(digits)])
    return value


country_lists = st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True).map(
    lambda rs: MobileCountries(rs[0], tuple(rs[1:]))
)


@settings(max_examples=60, deadline=None)
@given(countries=country_lists, values=st.lists(written_mobiles(), min_size=1, max_size=60))
def test_fast_path_equals_the_package_on_generated_numbers(countries, values):
    assert_same(values, countries)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.text(max_size=24), max_size=30))
def test_fast_path_equals_the_package_on_junk(values):
    assert_same(values, MobileCountries("IN", ("SG", "GB")))


PUNCTUATION = (
    *" -./()\u00a0",
    *"\t[]~*#,;_':",
    *"\u2010\u2013\u2015\u2212\u30fc\uff0d\uff0e\uff0f\u00ad\u200b\u2060\u3000\uff08\uff09\u2053\u223c\uff5e\u200e",
)
"""Separators: the plain rule's, the package's other punctuation, and characters it does not tolerate."""
PREFIXES = (
    *("", "", "", "+", "++", "+++", "00", "+00", "++00", "00+", "+0", "\uff0b", "\uff0b\uff0b", "+ ", "+-"),
    *("(+", "+(", "tel:", "tel:+", "Tel: +", "mobile ", "#", "*", "x", " ", "\u3000", "0 0", "+ +", "+\uff0b"),
)
SUFFIXES = (
    *("", "", "", " ext 12", " ext. 123", " x12", "x9", " #", "#", "-503#", ";ext=5", ",,12", ",3", "/x2"),
    *(".", ")", " ", "\t", "abc", " tel", ";phone-context=+65", ";phone-context=example.com", ";isub=1", "~7"),
    " int 3",
)
SCRIPTS = (0xFF10, 0x660, 0x6F0, 0x966, 0x9E6, 0x1D7CE)
"""Zero of other decimal digits the package reads: full-width, Arabic-Indic, Persian, Devanagari, Bengali, bold."""
KEYPAD = dict(zip("23456789", ["ABC", "DEF", "GHI", "JKL", "MNO", "PQRS", "TUV", "WXYZ"], strict=True))


@st.composite
def written_any_way(draw):
    """A number (as written_mobiles draws it) written the ways people and exports write them."""
    value = draw(written_mobiles())
    chars = list(value)
    if draw(st.integers(0, 5)) == 0:  # every digit in another script
        zero = draw(st.sampled_from(SCRIPTS))
        chars = [chr(zero + int(c)) if c in "0123456789" else c for c in chars]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # a digit here and there in another script
        at = draw(st.integers(0, max(len(chars) - 1, 0)))
        if chars and chars[at] in "0123456789":
            chars[at] = chr(draw(st.sampled_from(SCRIPTS)) + int(chars[at]))
    if draw(st.integers(0, 4)) == 0:  # a vanity number: digits written as their keypad letters
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, max(len(chars) - 1, 0)))
            if chars and chars[at] in KEYPAD:
                letter = draw(st.sampled_from(KEYPAD[chars[at]]))
                chars[at] = letter.lower() if draw(st.booleans()) else letter
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3]))):  # stray letters (an O for a 0, a typo)
        at = draw(st.integers(0, len(chars)))
        chars.insert(at, draw(st.sampled_from("OoIlSBxXeatnZ")))
    for _ in range(draw(st.sampled_from([0, 1, 2, 3, 4]))):
        at = draw(st.integers(0, len(chars)))
        chars.insert(at, draw(st.sampled_from(PUNCTUATION)))
    return draw(st.sampled_from(PREFIXES)) + "".join(chars) + draw(st.sampled_from(SUFFIXES))


@settings(max_examples=80, deadline=None)
@given(countries=country_lists, values=st.lists(written_any_way(), min_size=1, max_size=60))
def test_fast_path_equals_the_package_on_numbers_written_any_way(countries, values):
    assert_same(values, countries)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(written_any_way(), min_size=1, max_size=40))
def test_the_pipeline_reference_reads_numbers_written_any_way_as_the_package(values):
    countries = MobileCountries("IN", ("SG", "GB"))
    assert [read_mobile(v, countries) for v in values] == [read_with_package(v, countries) for v in values]


REPEATED_PLUS = "++6591000000"
PLUS_AND_00 = "+006591000296"


def test_repeated_plus_and_00_after_plus_read_as_the_package_reads_them():
    """The package reads `++65...` as `+65...`, and `+00 65...` with the default region's international
    dialling prefix (IN: `00`) as `+65...`; with SG first, `006` is SG's prefix and no number is left."""
    countries = MobileCountries("IN", ("SG",))
    values = [REPEATED_PLUS, PLUS_AND_00, "+ +65 9100 0000", "++00 65 9100 0296", "00+65 9100 0000"]
    expected = ["6591000000", "6591000296", None, "6591000296", "6591000000"]
    assert [read_with_package(v, countries) for v in values] == expected
    assert_same(values, countries)
    table = normalised_mobiles(pl.Series(values), countries)
    assert dict(zip(table["value"], table["normalised"], strict=True))["+ +65 9100 0000"] == "+6591000000"  # plain rule
    sg_first = MobileCountries("SG", ("IN",))
    assert read_with_package(PLUS_AND_00, sg_first) is None and read_with_package(REPEATED_PLUS, sg_first)
    assert_same(values, sg_first)


def test_numbers_written_as_the_package_tolerates_read_as_it_reads_them():
    countries = MobileCountries("IN", ("SG",))
    cases = {
        "+65/9100/0000": "6591000000",
        "(+65) 9100 0000": "6591000000",
        "tel:+65-9100-0000": "6591000000",
        "+65 9100 0000 ext. 12": "6591000000",
        "\uff0b\uff16\uff15 \uff19\uff11\uff10\uff10 \uff10\uff10\uff10\uff10": "6591000000",
        "98765 O43210": "919876543210",  # one stray letter: the package drops it
        "+65 91ABCDEF": "6591222333",  # three letters or more: keypad digits
        "98765\t43210": None,  # a tab is no separator to the package
        "98a7654321": None,  # a letter before the third digit: no number
    }
    assert {v: read_with_package(v, countries) for v in cases} == cases
    assert_same(list(cases), countries)


def test_the_usual_forms_are_read_without_the_package(monkeypatch):
    """The fast path decides values of digits, separators, leading `+` signs and stray letters itself."""
    read: list[str] = []

    def counted(value: str, countries: MobileCountries) -> str | None:
        read.append(value)
        return read_mobile(value, countries)

    monkeypatch.setattr(mobile, "read_mobile", counted)
    countries = MobileCountries("IN", ("SG",))
    usual = ["919876543210", "+91 98765-43210", "0091 9876543210", "098765.43210", "(987) 654/3210", "8123 4567"]
    usual += [REPEATED_PLUS, "+ 65 (9100) 0000", "98765 4321O", "+91 98765 4321o", "6591000000", "12345"]
    table = read_mobiles(pl.Series([*usual, PLUS_AND_00, "98765\t43210"]), countries)
    assert sorted(read) == sorted([PLUS_AND_00, "98765\t43210"])
    assert dict(table.iter_rows()) == {v: read_with_package(v, countries) for v in table["value"]}


def test_pipeline_reference_is_the_package():
    """read_mobile (the pipeline's fallback) is the same reading as the package called directly."""
    countries = MobileCountries("IN", ("SG",))
    values = [f for e in example_numbers("IN") + example_numbers("SG") for f in written_forms("IN", e)]
    assert [read_mobile(v, countries) for v in values] == [read_with_package(v, countries) for v in values]


def test_national_and_international_forms_meet():
    countries = MobileCountries("IN", ("SG",))
    table = normalised_mobiles(
        pl.Series(["98765 43210", "+91 98765-43210", "0091 9876543210", "09876543210", "919876543210", "8123 4567"]),
        countries,
    )
    normalised = dict(zip(table["value"], table["normalised"], strict=True))
    assert set(list(normalised.values())[:5]) == {"919876543210"}
    assert normalised["8123 4567"] == "6581234567"  # not an IN number: the second country reads it
    assert table["valid"].all()


def test_a_value_without_valid_reading_keeps_the_plain_rule():
    table = normalised_mobiles(pl.Series(["+1 (212) 555", "12345", "98a76"]), MobileCountries("IN"))
    assert table.sort("value").rows() == [
        ("+1 (212) 555", "1212555", False),
        ("12345", "12345", False),
        ("98a76", "98a76", False),
    ]


def test_every_distinct_value_has_a_row_a_missing_one_too():
    values = pl.Series(["13800000001", None, "13800000001", "+86 138 0000 0002"], dtype=pl.String)
    table = normalised_mobiles(values, MobileCountries("CN"))
    assert sorted(table.rows(), key=str) == [
        ("+86 138 0000 0002", "8613800000002", True),
        ("13800000001", "8613800000001", True),
        (None, None, False),
    ]


def test_a_number_of_a_country_not_configured_is_not_valid():
    countries = MobileCountries("IN", ("SG",))
    assert read_with_package("+44 7400 123456", countries) is None
    assert read_mobiles(pl.Series(["+44 7400 123456"]), countries)["mobile"].to_list() == [None]
    assert read_mobiles(pl.Series(["+44 7400 123456"]), MobileCountries("GB"))["mobile"].to_list() == ["447400123456"]


def test_the_first_valid_reading_wins():
    """Order matters: a number valid in both countries takes the country listed first."""
    both = next(
        e
        for e in itertools.chain.from_iterable(written_forms("SG", x) for x in example_numbers("SG"))
        if read_with_package(e, MobileCountries("IN")) and read_with_package(e, MobileCountries("SG"))
    )
    assert read_mobiles(pl.Series([both]), MobileCountries("IN", ("SG",)))["mobile"][0].startswith("91")
    assert read_mobiles(pl.Series([both]), MobileCountries("SG", ("IN",)))["mobile"][0].startswith("65")
