"""The search page in headless Chromium (Debian's package, driven by Playwright): type a query,
see thumbnails, run "more like this", save a screenshot."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = next((p for p in (os.environ.get("MMINDEX_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
ARTIFACTS = Path(os.environ.get("MMINDEX_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install chromium; .ci/run installs it)")
def test_search_page_shows_thumbnails(live_site):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
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
            page.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=True)

            second = cards.nth(1).get_attribute("data-id")
            cards.nth(1).hover()
            assert second in cards.nth(1).locator(".payload").inner_text()
            cards.nth(1).locator(".like").click()
            page.wait_for_function(f"() => document.querySelector('.hit')?.dataset.id === '{second}'", timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "more-like-this.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "search-page.png").stat().st_size > 10_000
