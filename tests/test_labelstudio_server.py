"""The local server (`make labelstudio`), where `curate` finds it, and how failures read."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from curation.config import Config
from curation.errors import LabelStudioError
from pipelines import ls_server as srv
from pipelines.ls_client import LabelStudioClient, OutcomeUnknownError, resolve_connection
from tests.fixtures_labelstudio import LS_VENV, REPO, closed_port_url


def test_connection_comes_from_environment_then_config_then_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".labelstudio").mkdir()
    (tmp_path / ".labelstudio" / "env").write_text("LABEL_STUDIO_URL=http://127.0.0.1:9001\n"
                                                   "LABEL_STUDIO_API_KEY=from-file\n")
    work = tmp_path / "sub" / "dir"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    conn = resolve_connection(Config())
    assert (conn.url, conn.api_key) == ("http://127.0.0.1:9001", "from-file")
    assert conn.key_from.endswith(".labelstudio/env")
    cfg = Config.model_validate({"labelstudio": {"url": "http://cfg:1/", "api_key": "from-config"}})
    conn = resolve_connection(cfg)
    assert (conn.url, conn.api_key) == ("http://cfg:1", "from-config")
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://env:2")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "from-env")
    conn = resolve_connection(cfg)
    assert (conn.url, conn.api_key) == ("http://env:2", "from-env")
    assert "from-env" not in repr(conn)


def test_no_connection_anywhere_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelStudioError, match="make labelstudio"):
        resolve_connection(Config())


class _Stub(BaseHTTPRequestHandler):
    """Answers every request with the status in `self.server.status` (or hangs when it is 0)."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        status = self.server.status  # type: ignore[attr-defined]
        if status == 0:
            time.sleep(2)
            return
        body = b'{"detail": "boom"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


@pytest.fixture
def stub() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.hits = 0  # type: ignore[attr-defined]
    server.status = 500  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def test_5xx_is_retried_with_backoff_then_named(stub: Any) -> None:
    client = LabelStudioClient(stub.url, "key", retries=2, backoff_s=0.01)
    with pytest.raises(LabelStudioError, match=r"answered 500 .*3 times") as err:
        client.list_projects()
    assert stub.url in str(err.value) and stub.hits == 3
    assert "server.log" in str(err.value)


def test_5xx_on_an_import_is_an_unknown_outcome_not_a_retry(stub: Any) -> None:
    client = LabelStudioClient(stub.url, "key", retries=3, backoff_s=0.01)
    with pytest.raises(OutcomeUnknownError, match="may or may not"):
        client.import_tasks(1, [{"data": {"text": "x"}}])
    assert stub.hits == 1


def test_timeouts_are_retried_then_named(stub: Any) -> None:
    stub.status = 0
    client = LabelStudioClient(stub.url, "key", timeout_s=0.3, retries=1, backoff_s=0.01)
    with pytest.raises(LabelStudioError, match=r"No answer from Label Studio at .* after 2 attempts"):
        client.list_projects()
    assert stub.hits == 2


def test_401_and_connection_refused_read_clearly(stub: Any) -> None:
    stub.status = 401
    with pytest.raises(LabelStudioError, match=r"API key rejected .*\(401\)"):
        LabelStudioClient(stub.url, "key", retries=3).list_projects()
    assert stub.hits == 1
    url = closed_port_url()
    with pytest.raises(LabelStudioError, match=r"Cannot reach Label Studio at .* \(connection refused\) after 2"):
        LabelStudioClient(url, "key", retries=1, backoff_s=0.01).list_projects()


def test_a_busy_port_is_refused_before_starting(tmp_path: Path) -> None:
    if not (LS_VENV / "bin" / "label-studio").exists():
        pytest.skip("Label Studio not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LabelStudioError, match=f"Port {port} .* already in use"):
            srv.start(data_dir=tmp_path / "ls", venv=LS_VENV, port=port, install_missing=False)
    assert not (tmp_path / "ls" / "server.pid").exists()


@pytest.mark.integration
def test_session_server_layout_and_idempotent_start(ls_server: Any) -> None:  # type: ignore[no-untyped-def]
    env_file = ls_server.data_dir / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = srv.read_env_file(env_file)
    assert values["LABEL_STUDIO_URL"] == ls_server.url
    assert values["LABEL_STUDIO_API_KEY"] == ls_server.api_key and len(ls_server.api_key) == 40
    assert set(values) == {"LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_USERNAME",
                                     "LABEL_STUDIO_PASSWORD"}
    assert ls_server.api_key not in repr(ls_server)
    st = srv.status(data_dir=ls_server.data_dir)
    assert st["running"] is True and st["url"] == ls_server.url
    again = srv.start(data_dir=ls_server.data_dir, venv=LS_VENV, install_missing=False)
    assert again.started is False and again.pid == ls_server.pid and again.api_key == ls_server.api_key
    proc = subprocess.run([sys.executable, "-m", "pipelines.ls_server", "start", "--data-dir",
                           str(ls_server.data_dir), "--venv", str(LS_VENV)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0 and "already running" in proc.stdout
    assert ls_server.api_key not in proc.stdout + proc.stderr
    assert ls_server.password not in proc.stdout + proc.stderr
    log = (ls_server.data_dir / "server.log").read_text(errors="replace")
    assert f"Starting development server at {ls_server.url}/" in log
    assert ls_server.api_key not in log


@pytest.mark.integration
def test_admin_can_log_in_with_the_stored_password(ls_server: Any) -> None:  # type: ignore[no-untyped-def]
    import httpx

    with httpx.Client(base_url=ls_server.url, follow_redirects=False, timeout=30) as web:
        page = web.get("/user/login/")
        token = web.cookies.get("csrftoken")
        assert page.status_code == 200 and token
        resp = web.post("/user/login/", data={"email": ls_server.username, "password": ls_server.password,
                                              "csrfmiddlewaretoken": token}, headers={"Referer": ls_server.url})
        assert resp.status_code == 302 and "/login" not in resp.headers["location"]


@pytest.mark.integration
def test_an_invited_annotator_signs_up_and_sees_the_projects(ls_server: Any) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from tests.fixtures_labelstudio import cli_json, curate_cli

    env = {"LABEL_STUDIO_URL": ls_server.url, "LABEL_STUDIO_API_KEY": ls_server.api_key}
    link = cli_json(curate_cli("labelstudio", "invite", "--json", env=env))["invite_url"]
    assert link.startswith(f"{ls_server.url}/user/signup/?token=")
    with httpx.Client(follow_redirects=False, timeout=30) as web:
        web.get(link)
        resp = web.post(link, data={"email": "new.annotator@example.com", "password": "annotate-123456",
                                    "csrfmiddlewaretoken": web.cookies.get("csrftoken")}, headers={"Referer": link})
        assert resp.status_code == 302
        assert web.get(f"{ls_server.url}/api/projects/", headers={"Referer": ls_server.url}).status_code == 200
