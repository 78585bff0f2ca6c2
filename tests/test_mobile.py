"""`[mobile]`: the fast path (pipeline.values.mobile.read_mobiles) equals the phonenumbers package on every value.

The package is called here directly (model.read_with_package), never through the pipeline.
"""

from __future__ import annotations

import itertools

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata

from model import read_with_package
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
