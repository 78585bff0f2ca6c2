"""The `[mobile]` reading straight with the phonenumbers package, value by value: the tests' reference.

It shares no code with pipeline.values.mobile. The package is given the value as written: trimmed, a
leading '00' read as '+', nothing else taken away (repeated '+' signs, separators, letters, other
scripts' digits, extensions: whatever the package accepts counts). A value written without '+' is read
with the default country, then with each other country; one written with '+' or '00' names its own
country and is read once, with the default country as the region.
"""

from __future__ import annotations

import phonenumbers

from pipeline.config import MobileCountries


def read_with_package(value: str, countries: MobileCountries) -> str | None:
    """E.164 digits without '+' of the first valid reading of a configured country, or None."""
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    regions = [countries.default_country, *countries.other_countries]
    for region in regions[:1] if text.startswith("+") else regions:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) in regions:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).removeprefix("+")
    return None
