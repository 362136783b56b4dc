"""The search page in a real browser: Debian's chromium driven by Playwright, over a real UI
process reading files a real receiver wrote. Also writes docs/search.png for the README.

Needs `apt-get install chromium` (at /usr/bin/chromium) and `pip install playwright`; never
`playwright install`: the system chromium is used.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import REPO_ROOT, free_port, running_receiver

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
# In CI (.ci/run installs chromium) a missing browser is a failure, elsewhere a skip.
pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                reason="needs chromium at /usr/bin/chromium (apt-get install chromium)")
SCREENSHOT = REPO_ROOT / "docs" / "search.png"
"""Rewritten only with DRAIN_UPDATE_SCREENSHOT=1, so a test run leaves the work tree clean."""
sys.path.insert(0, str(REPO_ROOT / "bench"))
from gen import RecordFactory, dump_record  # noqa: E402

SECRET = "browser-secret-0123456789abcdefghijklmnop"
TOKEN = "browser-ui-token-0123456789abcdefghijklmno"
XSS_MESSAGE = "<script>window.injected=1</script>"
XSS_PATH = "/<img src=x onerror=window.injected=2>"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("browser")
    root = workdir / "data"
    factory = RecordFactory(3)
    records = [factory.record() for _ in range(3000)]
    start_ms = int(time.time() * 1000) - 55 * 60 * 1000
    for index, record in enumerate(records):  # spread over the last hour, for the histogram
        record["timestamp"] = start_ms + index * 1100
    lines = [dump_record(record) for record in records]
    xss = json.loads(lines[-1])
    xss.update(message=XSS_MESSAGE, path=XSS_PATH, level="error", requestId="req-xss-1",
               source="lambda", statusCode=500)
    lines[-1] = dump_record(xss)
    with running_receiver(workdir, ["--sink", "file", "--dir", str(root)],
                          env={"DRAIN_SECRET": SECRET}) as receiver:
        for start in range(0, len(lines), 500):
            body = b"\n".join(lines[start : start + 500])
            assert receiver.post(body, SECRET, content_type="application/x-ndjson").status_code == 200
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "ui", "--dir", str(root), "--port", str(port)],
        cwd=REPO_ROOT, env={**os.environ, "DRAIN_UI_TOKEN": TOKEN}, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def log_in(browser: object, url: str, token: str) -> object:
    # bypass_csp: Playwright's waits evaluate strings, which the page's CSP forbids. It also
    # proves the XSS records render as text through the page's own code, without CSP's help.
    page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)  # type: ignore[attr-defined]
    page.goto(url + "/?since=1h")
    page.fill("#token", token)
    page.click("#login button")
    return page


def test_search_filter_open_zoom_follow_a_link_and_xss_renders_as_text(
    browser: object, ui: str, tmp_path: Path
) -> None:
    page = log_in(browser, ui, TOKEN)
    page.wait_for_selector("#results tbody tr")
    assert page.locator("#results tbody tr").count() == 100
    page.wait_for_selector("#histogram .bar")
    shot = SCREENSHOT if os.environ.get("DRAIN_UPDATE_SCREENSHOT") == "1" else tmp_path / "search.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    page.fill("#level", "error")
    page.click("#search button")
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length > 0")
    levels = page.locator("#results tbody tr td:nth-child(2)").all_text_contents()
    assert set(levels) == {"error"}
    assert "level=error" in page.url

    xss_row = page.locator("#results tbody tr", has_text=XSS_MESSAGE)
    assert xss_row.count() == 1
    assert xss_row.locator("td:nth-child(5)").text_content() == XSS_PATH
    assert page.evaluate("window.injected") is None
    assert page.locator("#results img, #results script, #record img, #record script").count() == 0

    xss_row.locator("td:nth-child(6)").click()
    record = page.locator("#record")
    record.wait_for(state="visible")
    assert json.loads(record.text_content())["requestId"] == "req-xss-1"
    record.locator("a.filter", has_text="req-xss-1").click()
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length === 1")
    assert "requestId=req-xss-1" in page.url
    assert page.evaluate("window.injected") is None

    page.fill("#requestId", "")
    page.click("#search button")
    page.wait_for_selector("#histogram .bar")
    busiest = max(range(page.locator("#histogram .bar").count()),
                  key=lambda i: len(page.locator("#histogram .bar").nth(i).inner_html()))
    page.locator("#histogram .bar").nth(busiest).click()
    page.wait_for_function("location.search.includes('until=')")
    assert page.locator("#range").input_value() == "custom"
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length > 0")


def test_a_wrong_token_gets_nothing_and_the_login_stays(browser: object, ui: str) -> None:
    page = log_in(browser, ui, "wrong-token")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert page.locator("#login").is_visible()
    assert not page.locator("#app").is_visible()
    assert page.locator("#results tbody tr").count() == 0
    assert httpx.get(ui + "/api/search", timeout=10).status_code == 401


def test_the_histogram_shows_its_scale_its_colours_and_a_time_axis(browser: object, ui: str) -> None:
    page = log_in(browser, ui, TOKEN)
    page.wait_for_selector("#histogram .bar")
    caption = page.locator("#histogram-caption").text_content()
    match = re.match(r"3,000 matches; tallest bar (\d+), one bar (\d+) (s|min)", caption)
    assert match, caption
    tallest = int(match.group(1))
    bars = page.locator("#histogram .bar")
    counts = [int(title.rsplit(": ", 1)[1]) for title in bars.evaluate_all("bs => bs.map(b => b.title)")]
    assert sum(counts) == 3000 and max(counts) == tallest
    levels = page.locator("#histogram-caption .key + span").all_text_contents()
    assert levels == ["info", "warning", "error", "fatal"]  # the fixture's levels, in this order
    colour = "e => getComputedStyle(e).backgroundColor"
    swatch = page.locator("#histogram-caption .key.error").evaluate(colour)
    part = page.locator("#histogram .bar .error").first.evaluate(colour)
    assert swatch == part != "rgba(0, 0, 0, 0)"
    ticks = page.locator("#histogram-axis span").all_text_contents()
    assert len(ticks) == 5 and ticks[0].endswith(" UTC")
    assert all(re.fullmatch(r"\d\d:\d\d", tick) for tick in ticks[1:]), ticks

    # Records with another level, or none, are drawn too (in greys), after the known levels.
    page.evaluate("drawHistogram({start: 0, end: 2000, width: 1000, counts: "
                  "[[0, '-', 2], [0, 'info', 1], [1, 'debug', 1]]})")
    assert page.locator("#histogram-caption .key + span").all_text_contents() == ["info", "debug", "no level"]
    for part in page.locator("#histogram .bar > div").all():
        assert part.evaluate(colour) != "rgba(0, 0, 0, 0)"
    assert page.locator("#histogram .bar > div").count() == 3
    caption = page.locator("#histogram-caption").text_content()
    assert caption.startswith("4 matches; tallest bar 3, one bar 1 s")
    page.evaluate("drawHistogram({start: 0, end: 2000, width: 1000, counts: []})")
    assert page.locator("#histogram-caption").text_content() == "no matches"
