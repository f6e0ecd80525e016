"""The search page in headless Chromium (Debian's package, driven by Playwright): type a query, see thumbnails with
the similarity labelled apart from the payload's fields, narrow by a facet count, "more like this" and "less like
this", the back button, a bookmarked URL, an error that clears the old results, and payload text that stays text."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import ROOT
from hypothesis import strategies as st

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = next((p for p in (os.environ.get("MMINDEX_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
ARTIFACTS = Path(os.environ.get("MMINDEX_ARTIFACTS", ROOT / "test-artifacts"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="Chromium not found (apt-get install chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def url_state(page) -> dict:
    return {key: values if len(values) > 1 else values[0] for key, values in parse_qs(urlsplit(page.url).query).items()}


def ids_shown(page) -> list[str]:
    return page.eval_on_selector_all(".hit", "cards => cards.map(c => c.dataset.id)")


def wait_for_results(page, hits: bool = True) -> None:
    """Until the results shown are those of the search the URL names (``#results[data-state]``)."""
    page.wait_for_function("() => document.getElementById('results').dataset.state === location.pathname + "
                           "location.search" + (" && document.querySelectorAll('.hit').length > 0" if hits else ""),
                           timeout=20_000)


@needs_chromium
def test_search_page_shows_thumbnails(live_site, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(live_site.url)
    page.fill("#q", "a blue triangle")
    page.fill("#filter", "year >= 2000")
    page.click("button[type=submit]")
    page.wait_for_selector(".hit img", timeout=20_000)
    page.wait_for_function("() => [...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=20_000)
    cards = page.locator(".hit")
    assert cards.count() >= 5
    assert "results from shapes" in page.inner_text("#status")
    assert page.locator(".hit .caption").first.inner_text().strip()
    assert url_state(page) == {"q": "a blue triangle", "filter": "year >= 2000"}
    page.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=True)

    # The similarity has its own labelled element; the payload's own `score` field is listed under "fields".
    first = cards.first
    assert first.locator(".similarity").inner_text().startswith("similarity ")
    first.hover()
    fields = dict(zip(first.locator(".payload dt").all_inner_texts(), first.locator(".payload dd").all_inner_texts()))
    assert "score" in fields and first.locator(".payload .fields-label").first.inner_text().lower() == "fields"
    assert first.get_attribute("data-id") in first.locator(".payload").inner_text()
    page.close()
    assert (ARTIFACTS / "search-page.png").stat().st_size > 10_000


@needs_chromium
def test_facets_more_like_this_and_the_back_button(live_site, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{live_site.url}/?q=a+blue+triangle")  # a bookmarked search runs on load
    wait_for_results(page)
    assert page.input_value("#q") == "a blue triangle"
    first_search = ids_shown(page)

    # A facet count adds `field = 'value'` to the filter; every hit then has that value.
    page.wait_for_selector("#facets .facet-value", timeout=20_000)
    group = page.locator("#facets .facet").first
    field = group.get_attribute("data-field")
    button = group.locator(".facet-value").first
    value = button.get_attribute("data-value")
    count = int(button.locator(".count").inner_text())
    assert count >= 2
    button.click()
    page.wait_for_function("() => location.search.includes('filter=')", timeout=20_000)
    wait_for_results(page)
    condition = f"{field} = '{value}'"  # the sample's facet fields are keywords (or lists of them)
    assert page.input_value("#filter") == condition and url_state(page)["filter"] == condition
    shown = page.eval_on_selector_all(".hit", f"cards => cards.map(c => [...c.querySelectorAll('dt')]"
                                              f".find(d => d.textContent === '{field}').nextSibling.textContent)")
    held = [json.loads(text) if text.startswith("[") else [text] for text in shown]  # a list field: any element
    assert all(value in values for values in held), shown
    assert len(shown) == min(count, 24)  # the count is what the filter then finds
    filtered = ids_shown(page)

    # More like this: that point's neighbours, never the point itself.
    anchor = filtered[1]
    page.locator(f".hit[data-id='{anchor}'] .like").click()
    page.wait_for_function(f"() => location.search.includes('like={anchor}')", timeout=20_000)
    wait_for_results(page)
    assert anchor not in ids_shown(page)

    # Back: the filtered search again, as it was; back again: the first search, its filter box empty.
    page.go_back()
    wait_for_results(page)
    assert ids_shown(page) == filtered and page.input_value("#filter") == condition
    page.go_back()
    wait_for_results(page)
    assert ids_shown(page) == first_search and page.input_value("#filter") == ""
    page.close()


@needs_chromium
def test_less_like_this_mode_diversity_and_an_error(live_site, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(f"{live_site.url}/?q=a+blue+triangle")
    wait_for_results(page)
    first_search = ids_shown(page)

    # Less like this: the same query with that point as an `unlike`; it and the hits nearest to it drop.
    page.locator(f".hit[data-id='{first_search[0]}'] .unlike").click()
    page.wait_for_function(f"() => location.search.includes('unlike={first_search[0]}')", timeout=20_000)
    wait_for_results(page)
    assert first_search[0] not in ids_shown(page) and url_state(page)["q"] == "a blue triangle"
    assert page.locator("#examples .example[data-kind=unlike]").count() == 1

    # Mode and the diversity switch go into the URL too.
    page.select_option("#mode", "hybrid")
    page.check("#diversity")
    page.click("button[type=submit]")
    page.wait_for_function("() => location.search.includes('mode=hybrid')", timeout=20_000)
    wait_for_results(page)
    assert url_state(page)["diversity"] == "1"
    assert page.locator(".hit .similarity").first.inner_text().startswith("similarity ")  # MMR keeps it

    # An error clears the old results and says what is wrong.
    page.fill("#filter", "year >>= 3")
    page.click("button[type=submit]")
    page.wait_for_function("() => document.getElementById('status').classList.contains('error')", timeout=20_000)
    wait_for_results(page, hits=False)
    assert page.locator(".hit").count() == 0 and "bad_filter" in page.inner_text("#status")
    page.close()


@needs_chromium
def test_payload_text_is_never_markup(live_site, browser):
    """An answer whose captions, field names and values hold HTML shows them as text: no element is made of them."""
    hostile = "<img src=x onerror=\"window.pwned=1\"><b>bold</b>"
    answer = {"collection": "shapes", "alias_of": None, "model": "m", "target": "image", "mode": "dense",
              "score_kind": "cosine", "encode_ms": 1, "search_ms": 1,
              "hits": [{"id": "00000000-0000-0000-0000-000000000001", "score": 0.5, "caption": hostile,
                        "payload": {hostile: hostile, "score": 99}, "source": {"file": hostile}, "thumbnail": None,
                        "group": hostile}]}
    page = browser.new_page()
    page.route("**/search", lambda route: route.fulfill(status=200, content_type="application/json",
                                                        body=json.dumps(answer)))
    page.goto(f"{live_site.url}/?q=anything")
    wait_for_results(page)
    card = page.locator(".hit").first
    assert card.locator(".caption").inner_text() == hostile
    assert card.locator(".similarity").inner_text() == "similarity 0.5000"
    assert card.locator("b").count() == 0 and card.locator("img").count() == 0
    assert page.evaluate("() => window.pwned") is None
    page.close()


KEYWORD_VALUES = st.lists(st.sampled_from(list("ab'\"\\ é`()=,") + ["\\'", "\\\\"]), max_size=8).map("".join)
FIELDS = {"color": "keyword", "shot on": "keyword", "exif.make": "keyword", "and": "keyword", "größe": "integer",
          "a-b": "bool", "x_1": "integer"}  # field → its recorded type
VALUES = {"keyword": KEYWORD_VALUES, "integer": st.integers(-10**6, 10**6), "bool": st.booleans()}
CONDITIONS = st.sampled_from(sorted(FIELDS)).flatmap(lambda field: st.tuples(st.just(field), VALUES[FIELDS[field]]))


@needs_chromium
def test_a_facet_click_adds_the_condition_the_where_language_reads_back(live_site, browser):
    """The page's `field = value` (``withCondition``: a bare name or backticks, a quoted and escaped literal) compiles
    (``parse_where``) to exactly ``key = value`` ANDed with the filter before it, for drawn names and values:
    quotes, backslashes, spaces, dots, keywords, non-ASCII, numbers, bools."""
    from hypothesis import given, settings

    from mmindex.keys import qdrant_key
    from mmindex.pipeline.query.where import parse_where

    page = browser.new_page()
    page.goto(live_site.url)
    page.wait_for_function("() => typeof withCondition === 'function'")

    @settings(max_examples=150, deadline=None)
    @given(cases=st.lists(CONDITIONS, min_size=1, max_size=4))
    def round_trip(cases):
        filter_text = ""
        for field, value in cases:
            filter_text = page.evaluate("([f, field, value]) => withCondition(f, field, value)",
                                        [filter_text, field, value])
        conditions = [{"key": qdrant_key(field), "match": {"value": value}} for field, value in cases]
        assert flatten(parse_where(filter_text, FIELDS)) == conditions, filter_text

    try:
        round_trip()
    finally:
        page.close()


def flatten(node: dict) -> list[dict]:
    """The conditions of nested ``must`` lists, in order (``(a) and b`` compiles to must[must[a], b] or must[a, b])."""
    found = []
    for item in node.get("must", []):
        found.extend(flatten(item) if "must" in item and len(item) == 1 else [item])
    return found
