"""The studio in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against a live server on a loopback port with the tiny
model of the unit tests. Skipped, with the reason, where no Chromium or driver exists.

One server and one browser for the whole module (start-up is the slow part). With
``AFINAR_SCREENSHOTS=DIR`` (``make screenshots``) the tests save the main pages as PNGs there."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import THREADS
from tests.live_server import live_server
from tests.tiny_model import build_tiny_chat_model

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _why_no_browser() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    if not Path(DRIVER).exists():
        return f"no chromedriver at {DRIVER} (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="session")
def driver():
    why = _why_no_browser()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")  # its environment is restored when the module ends: a
def studio(tmp_path_factory):     # session fixture left AFINAR_LOG_REQUESTS on for every test
    """A live server on a fresh AFINAR_HOME with ``tiny`` registered, an admin key and two
    member keys (groups ``support`` and ``billing``), requests logged (``AFINAR_LOG_REQUESTS``,
    so the playground's answers take feedback). Yields (base URL, keys, app)."""
    from afinar.models import Catalog
    from afinar.server.app import create_app
    from afinar.settings import reset_settings
    from afinar.store.db import reset_databases
    from afinar.store.keys import ApiKeys

    root = tmp_path_factory.mktemp("studio")
    saved = {k: os.environ.get(k) for k in ("AFINAR_HOME", "AFINAR_DATABASE_URL",
                                            "AFINAR_THREADS", "AFINAR_LOG_REQUESTS")}
    os.environ.update(AFINAR_HOME=str(root / "home"), AFINAR_THREADS=THREADS,
                      AFINAR_LOG_REQUESTS="on")
    os.environ.pop("AFINAR_DATABASE_URL", None)
    reset_settings()
    reset_databases()
    model = build_tiny_chat_model(root / "tiny")
    cfg = json.loads((model / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048  # room for retrieved sources (rotary: no weights)
    (model / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny", model)
    Catalog().add("tiny-b", shutil.copytree(model, root / "tiny-b"))  # a second column
    keys = {"admin": ApiKeys().create("boss", admin=True)[1],
            "support": ApiKeys().create("ann", groups="support")[1],
            "billing": ApiKeys().create("bill", groups="billing")[1]}
    app = create_app()
    try:
        with live_server(app, timeout_s=60) as url:
            yield url, keys, app
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()
        reset_databases()


def shot(driver, name: str) -> None:
    """A screenshot of the page as it stands, when AFINAR_SCREENSHOTS names a folder."""
    folder = os.environ.get("AFINAR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        h = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(max(int(h), 700), 2400))
        time.sleep(0.2)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(1280, 900)
