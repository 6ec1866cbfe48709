from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import THREADS
from tests.tiny_model import build_tiny_chat_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def needs_shared(relpath: str):
    """Skip (with the reason) where ``../shared/<relpath>`` is absent: a user's clone has none."""
    return pytest.mark.skipif(not (SHARED / relpath).exists(),
                              reason=f"{SHARED / relpath} not found (a clone without ../shared)")


# The longest modules (minutes each, on 2 cores), started first: pytest-xdist hands modules out
# in collection order (`make test` passes --no-loadscope-reorder), so these do not start last
# and leave one worker running alone at the end. Then the other integration modules.
LONGEST = ["test_finetune_real", "test_eval_real", "test_engine_real", "test_export_real"]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        module = item.path.stem
        if module in LONGEST:
            return LONGEST.index(module)
        return len(LONGEST) + (0 if item.get_closest_marker("integration") else 1)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def tiny_model_template(tmp_path_factory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def tiny_model_dir(tiny_model_template, tmp_path) -> Path:
    """A private copy, so a test may change files without touching others."""
    return Path(shutil.copytree(tiny_model_template, tmp_path / "tiny-llama"))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh AFINAR_HOME (and database) for one test."""
    from afinar.settings import reset_settings
    from afinar.store.db import reset_databases

    h = tmp_path / "afinar-home"
    monkeypatch.setenv("AFINAR_HOME", str(h))
    monkeypatch.delenv("AFINAR_DATABASE_URL", raising=False)
    monkeypatch.setenv("AFINAR_THREADS", THREADS)
    reset_settings()
    reset_databases()
    yield h
    reset_settings()
    reset_databases()


@pytest.fixture
def tiny(home, tiny_model_template):
    """The tiny model registered as ``tiny`` and loaded."""
    from afinar.models import Catalog, load_causal_lm

    Catalog().add("tiny", tiny_model_template)
    return load_causal_lm(Catalog().get("tiny"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/ is absent (a user's clone has none)")
    return SHARED


@pytest.fixture
def tiny_long(home, tiny_model_template, tmp_path):
    """The tiny model with a 2,048-token window (rotary positions extend safely), for prompts
    that carry tool definitions or retrieved sources."""

    from afinar.models import Catalog, load_causal_lm

    folder = Path(shutil.copytree(tiny_model_template, tmp_path / "tiny-long"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (folder / "config.json").write_text(json.dumps(cfg))
    Catalog().add("tiny-long", folder)
    return load_causal_lm(Catalog().get("tiny-long"))


SEEN: list[dict] = []  # requests the local weather endpoint received


class Weather(BaseHTTPRequestHandler):
    def do_GET(self):
        SEEN.append({"path": self.path, "auth": self.headers.get("Authorization")})
        body = json.dumps({"city": self.path.split("/")[-1].split("?")[0], "temperature_c": 17.3,
                           "sky": "violet"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def weather_yaml(tmp_path, monkeypatch):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Weather)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("WEATHER_TOKEN", "s3cret")
    p = tmp_path / "tools.yaml"
    p.write_text(f"""tools:
  - name: get_weather
    description: Current weather for a city
    url: http://127.0.0.1:{srv.server_port}/weather/{{city}}
    method: GET
    headers: {{Authorization: "Bearer ${{WEATHER_TOKEN}}"}}
    timeout: 5
    parameters:
      type: object
      properties: {{city: {{type: string}}}}
      required: [city]
""")
    SEEN.clear()
    yield p
    srv.shutdown()


# -- database backends (issue 18): SQLite always, a throwaway PostgreSQL where one starts ------
@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the session (tests/pg.py); skipped with the reason if none."""
    from tests.pg import PgServer, PgUnavailable

    srv = PgServer()
    try:
        srv.start()
    except PgUnavailable as e:
        pytest.skip(f"no PostgreSQL for the postgresql variant: {e}")
    yield srv
    srv.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request, monkeypatch) -> str:
    """Run a test on SQLite and on PostgreSQL (``@pytest.mark.usefixtures("db_backend")`` or a
    module's ``pytestmark``). PostgreSQL: a fresh database as AFINAR_DATABASE_URL, set after the
    ``home`` fixture (which clears it). Returns the backend's name."""
    if request.param == "postgresql":
        if not {"home", "db_url"} & set(request.fixturenames):
            pytest.skip("uses no database: its SQLite run covers it")
        from afinar.settings import reset_settings
        from afinar.store.db import reset_databases

        url = request.getfixturevalue("pg_server").new_database()
        if "home" in request.fixturenames:
            request.getfixturevalue("home")
        monkeypatch.setenv("AFINAR_DATABASE_URL", url)
        reset_settings()
        reset_databases()
        request.node.pg_url = url
    return request.param


@pytest.fixture
def db_url(db_backend, request, tmp_path) -> str:
    """A fresh, empty database's URL on each backend (for tests that open ``Database`` directly)."""
    if db_backend == "postgresql":
        return request.node.pg_url
    return f"sqlite:///{tmp_path}/a.db"
