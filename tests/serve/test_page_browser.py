"""The page at ``/`` in a real headless browser (Debian's chromium + chromedriver, Selenium).

scripts/test.sh installs chromium and chromium-driver; on a machine without them
the test skips and says so.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_helpers import Bundles, Running, expected

from bundle.serve import FileSource, create_app
from bundle.serve.sources import file_digest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or DRIVER is None:
        why = (
            "chromium/chromedriver not installed (apt-get install -y chromium "
            "chromium-driver; scripts/test.sh does it)"
        )
        if os.environ.get("CI"):  # CI installs them: a missing browser there is a failure
            pytest.fail(why)
        pytest.skip(why)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,2000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_what_serves_and_the_form_runs_it(
    browser: Any, bundles: Bundles, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "tiny.mbundle"
    path.write_bytes(bundles.good[2].read_bytes())
    with Running(create_app(FileSource(path, trust=bundles.trust))) as srv:
        browser.get(srv.url + "/")
        assert browser.find_element(By.ID, "version-tiny").text == "2"
        assert browser.find_element(By.ID, "digest-tiny").text == file_digest(path)
        assert bundles.key.key_id[:16] in browser.find_element(By.ID, "signers-tiny").text
        assert "one-row canary ran" in browser.find_element(By.ID, "smoke-tiny").text
        assert browser.find_element(By.ID, "parity-tiny").text.startswith("not measured")
        # the form has one field per input, prefilled from the signature
        field = browser.find_element(By.ID, "in-tiny-X")
        assert json.loads(field.get_attribute("value")) == [[0, 0, 0, 0]]
        x = [[0.5, -1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]
        field.clear()
        field.send_keys(json.dumps(x))
        browser.find_element(By.ID, "try-tiny").click()
        result = browser.find_element(By.ID, "result-tiny")
        WebDriverWait(browser, 30).until(lambda d: result.get_attribute("data-status"))
        assert result.get_attribute("data-status") == "200", result.text
        assert result.get_attribute("data-digest") == file_digest(path)
        body = json.loads(result.text.split("\n", 1)[1])
        np.testing.assert_allclose(
            np.array(body["outputs"][0]["data"]).reshape(2, 3),
            expected(2, np.array(x, np.float32)),
            rtol=1e-6,
        )
        # a bad value shows the server's reason, naming the field
        field.clear()
        field.send_keys("[[1, 2, 3]]")
        browser.find_element(By.ID, "try-tiny").click()
        WebDriverWait(browser, 30).until(lambda d: result.get_attribute("data-status") == "400")
        assert "inputs[0].shape[1]" in result.text
        # the script came from /page.js under a CSP with no inline script allowed
        logs = [
            e
            for e in browser.get_log("browser")
            if "Content Security Policy" in e.get("message", "")
        ]
        assert logs == []


def test_strings_from_bundles_and_stores_are_escaped_on_the_page() -> None:
    from bundle.serve.page import render_page

    evil = '<img src=x onerror="alert(1)">'
    status = {
        "name": evil,
        "state": "ready",
        "source": evil,
        "current": {
            "version": evil,
            "digest": evil,
            "signers": [{"key_id": evil, "key_type": evil}],
            "smoke": evil,
            "parity": None,
            "loaded_at": 0,
            "requests": 0,
            "errors": 0,
            "p99_ms": None,
        },
        "last_failure": {"stage": evil, "error": evil},
        "events": [{"event": evil, "digest": evil, "time": 0}],
    }

    class M:
        columns = ()
        inputs = ()

    text = render_page([(status, M(), [{"seq": 1, "action": evil, "signer": evil}])])
    assert "<img" not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
