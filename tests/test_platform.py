"""The platform's API spelled once (delivery/platform.py): its codes agree with the catalog wherever the catalog
holds the same code, and the paths push builds are the endpoints the emulator routes."""

from __future__ import annotations

from pipeline.catalog import ALREADY_PRESENT_WARNING, CATALOG, already_present_code
from pipeline.config import CARD
from pipeline.delivery import platform
from pipeline.delivery.platform import Route, route


def test_the_platform_s_codes_that_the_catalog_holds_mean_the_same_there():
    codes = {name: value for name, value in vars(platform).items() if name.endswith("_CODE")}
    assert {name: CATALOG[code].name for name, code in codes.items() if code in CATALOG} == {
        "MERGED_CODE": "MERGED",
        "FOLLOWED_CODE": "FOLLOWED_MERGE",
        "NOT_FOUND_CODE": "CUSTOMER_NOT_FOUND",
        "INVALID_REQUEST_CODE": "INVALID_FIELD",
    }
    assert {CATALOG[c].kind for c in (platform.MERGED_CODE, platform.FOLLOWED_CODE)} == {"warning"}


def test_already_present_codes_are_the_catalog_s_unchanged_warnings():
    unchanged = {code for code, entry in CATALOG.items() if entry.name.startswith("ALREADY_PRESENT")}
    assert unchanged == platform.ALREADY_PRESENT_CODES
    types = [*ALREADY_PRESENT_WARNING, CARD, "fbId"]
    assert {already_present_code(t) for t in types} == platform.ALREADY_PRESENT_CODES
    assert all(CATALOG[code].kind == "warning" for code in unchanged)


def test_the_paths_push_builds_are_the_endpoints_the_emulator_routes():
    path, _, query = platform.change_path(1024, "WECHAT", "WX MAIN").partition("?")
    assert route("POST", path) == Route("change", 1024) and query == "source=WECHAT&accountId=WX%20MAIN"
    assert platform.change_path(7, "INSTORE", None) == "/v2/customers/7/changeIdentifier?source=INSTORE"
    path, _, query = platform.customer_path(1024).partition("?")
    assert route("GET", path) == Route("customer", 1024) and query == "source=ALL"
    assert route("POST", platform.TOKEN_PATH) == Route("token")
    assert route("GET", platform.LOOKUP_PATH) == Route("lookup")
    assert route("GET", path + "/cards") == Route(None, 1024)
    assert route("GET", "/v2/elsewhere") == Route(None)
