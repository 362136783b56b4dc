"""The search page's JSON API over real HTTP: the token, the filters, raw records, the page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import REPO_ROOT, free_port, running_receiver

TOKEN = "ui-token-0123456789abcdefghijklmnopqrstuvwx"
LINES = [
    b'{"id":"1","timestamp":1796000000000,"level":"error","source":"lambda","projectId":"prj_a",'
    b'"message":"<script>alert(1)</script>","path":"/<img src=x onerror=alert(2)>","statusCode":500}',
    b'{"id":"2","timestamp":1796000001000,"level":"info","source":"edge","projectId":"prj_b",'
    b'"message":"caf\xc3\xa9 ok","proxy":{"statusCode":404,"path":"/x"}}',
]


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("ui") / "data"
    (root / "2026-12-02").mkdir(parents=True)
    (root / "2026-12-02" / "logs.ndjson").write_bytes(b"\n".join(LINES) + b"\n")
    port = free_port()
    env = {**os.environ, "DRAIN_UI_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "receiver", "ui", "--dir", str(root), "--port",
                                str(port)], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)
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


def get(url: str, token: str | None = TOKEN, **params: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(url, params=params, headers=headers, timeout=30)


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_a_missing_or_wrong_token_gets_a_401_and_no_data(ui: str, token: str | None) -> None:
    for path in ("/api/search", "/api/histogram"):
        response = get(ui + path, token)
        assert response.status_code == 401
        assert response.json() == {"error": "missing or wrong token: send Authorization: Bearer "
                                            "<DRAIN_UI_TOKEN>"}


def test_search_returns_the_records_byte_for_byte_newest_first(ui: str) -> None:
    response = get(ui + "/api/search")
    assert response.content == b'{"records":[' + LINES[1] + b"," + LINES[0] + b"]}"


def test_filters_match_the_proxy_fields_too(ui: str) -> None:
    assert [r["id"] for r in get(ui + "/api/search", status="4xx").json()["records"]] == ["2"]
    assert [r["id"] for r in get(ui + "/api/search", q="ALERT").json()["records"]] == ["1"]
    assert get(ui + "/api/search", since="yesterday").status_code == 400


def test_histogram_counts_by_level(ui: str) -> None:
    body = get(ui + "/api/histogram", buckets="2").json()
    assert sorted((level, n) for _, level, n in body["counts"]) == [("error", 1), ("info", 1)]


def test_the_page_loads_nothing_from_elsewhere_and_forbids_inline_scripts(ui: str) -> None:
    page = httpx.get(ui + "/", timeout=10)
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' only
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")
    script = httpx.get(ui + "/static/app.js", timeout=10).text
    assert "innerHTML" not in script and "http" not in script
    assert json.loads(get(ui + "/api/search", limit="1").text)["records"][0]["id"] == "2"


def test_the_receiver_serves_the_page_on_its_own_listener_with_ui(tmp_path: Path) -> None:
    ui_port = free_port()
    env = {"DRAIN_SECRET": "ui-receiver-secret-0123456789abcdefghijkl", "DRAIN_UI_TOKEN": TOKEN,
           "DRAIN_UI_PORT": str(ui_port)}
    args = ["--sink", "file", "--dir", str(tmp_path / "data"), "--ui"]
    ui_url = f"http://127.0.0.1:{ui_port}"
    with running_receiver(tmp_path, args, env=env) as receiver:
        assert receiver.post(LINES[0], env["DRAIN_SECRET"]).status_code == 200
        deadline = time.monotonic() + 20
        while True:
            try:
                found = get(ui_url + "/api/search")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, receiver.stderr()
                time.sleep(0.1)
        assert found.content == b'{"records":[' + LINES[0] + b"]}"
        assert httpx.get(receiver.url + "/api/search", headers={"authorization": f"Bearer {TOKEN}"},
                         timeout=10).status_code != 200
    with pytest.raises(httpx.TransportError):
        httpx.get(ui_url + "/", timeout=2)
