"""Fixtures for the Label Studio tests: one real server per test session, a fresh project per test.

The server is the pinned Label Studio of `.ls-venv`, started by `pipelines.ls_server` on a free port with a
temporary data folder (about 40 s on first start), and stopped with SIGTERM at the end. Locally the tests skip when
`.ls-venv` is missing; in CI (CI=true) they fail instead, since CI must run them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LS_VENV = Path(os.environ.get("CURATE_TEST_LS_VENV", REPO / ".ls-venv"))


@pytest.fixture(autouse=True)
def _no_ambient_labelstudio(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY never reach a test by accident."""
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running Label Studio (ServerInfo: url, api_key, username, password) for the whole session."""
    from pipelines import ls_server as srv

    if not (LS_VENV / "bin" / "label-studio").exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"Label Studio is not installed in {LS_VENV}: CI must install it (see .ci/run)")
        pytest.skip(f"Label Studio not installed in {LS_VENV} (run `make labelstudio` once)")
    data_dir = tmp_path_factory.mktemp("labelstudio")
    try:
        info = srv.start(data_dir=data_dir, venv=LS_VENV, port=srv.free_port(), install_missing=False,
                         timeout_s=300)
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Label Studio did not start: {exc}")
    yield info
    srv.stop(data_dir=data_dir)


@pytest.fixture
def ls_client(ls_server: Any) -> Iterator[Any]:
    from pipelines.ls_client import LabelStudioClient

    client = LabelStudioClient(ls_server.url, ls_server.api_key, timeout_s=120, retries=2, backoff_s=0.2)
    yield client
    client.close()


@pytest.fixture
def ls_config(ls_server: Any, tmp_path: Path) -> Any:
    """A config pointing at the session server, with a project-name prefix unique to this test."""
    from curation.config import Config

    cfg = Config.model_validate({"labelstudio": {"url": ls_server.url, "api_key": ls_server.api_key,
                                                 "project": f"t{uuid.uuid4().hex[:10]}", "retries": 1,
                                                 "pull_overlap_s": 2.0}})
    return cfg


@pytest.fixture
def ls_env(ls_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY in the environment (for CLI runs in a subprocess)."""
    monkeypatch.setenv("LABEL_STUDIO_URL", ls_server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.api_key)
    return {"LABEL_STUDIO_URL": ls_server.url, "LABEL_STUDIO_API_KEY": ls_server.api_key}


def add_documents(
    store: Any,
    texts: Sequence[str],
    *,
    domain: str = "customer_service",
    source: str | None = None,
    labels: Sequence[str | None] | None = None,
    raw_texts: Sequence[str] | None = None,
) -> list[int]:
    """Insert documents (and imported labels where given) straight into the store; returns their ids in order.

    `texts` are the masked texts (`documents.text`); `raw_texts` the unmasked originals (default: the same).
    """
    from sqlalchemy import select

    from store.engine import insert_ignore
    from store.models import Annotation, Document, Source

    source = source or f"src-{uuid.uuid4().hex[:8]}"
    with store.connect() as conn:
        insert_ignore(conn, Source.__table__, [{"name": source, "domain": domain, "path": None}], conflict=["name"])
        source_id = conn.execute(select(Source.id).where(Source.name == source)).scalar_one()
        raws = list(raw_texts) if raw_texts is not None else list(texts)
        rows = [{"domain": domain, "source_id": source_id, "row_number": i, "raw_text": raws[i], "text": t,
                 "content_hash": hashlib.sha1(f"{source}:{i}:{t}".encode("utf-8", "surrogatepass")).hexdigest(),
                 "cluster_id": None, "n_tokens": len(t.split()), "n_sentences": 1}
                for i, t in enumerate(texts)]
        insert_ignore(conn, Document.__table__, rows, conflict=["domain", "content_hash"])
        ids = [conn.execute(select(Document.id).where(Document.domain == domain,
                                                      Document.content_hash == r["content_hash"])).scalar_one()
               for r in rows]
        if labels is not None:
            anns = [{"document_id": d, "annotator": f"import:{source}", "label": lab, "labels": [lab],
                     "origin": "import"} for d, lab in zip(ids, labels, strict=True) if lab is not None]
            if anns:
                conn.execute(Annotation.__table__.insert(), anns)
    return ids


def add_predictions(store: Any, preds: dict[int, tuple[str, float]], *, model_version: str = "m-test") -> None:
    from store.models import Prediction

    with store.connect() as conn:
        conn.execute(Prediction.__table__.insert(), [
            {"document_id": d, "model_version": model_version, "label": lab, "score": score, "probs": None}
            for d, (lab, score) in preds.items()
        ])


def choice(label: str) -> list[dict[str, Any]]:
    """An annotation result choosing `label` in the templates' `label` control."""
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def curate_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `curate ARGS` in a fresh process (as a user would, and so it can be killed)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=str(cwd or REPO), timeout=timeout, check=False)


def cli_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


class FaultyProxy:
    """A local HTTP proxy in front of Label Studio that misbehaves on purpose.

    `fault(method, path, n)` is asked for the n-th request (from 1): None forwards it; "drop" forwards it and then
    closes the connection without answering (the server applied it, the client does not know); "refuse" answers
    503 without forwarding. Used to test what the push does when an outcome is unknown or the server goes away.
    """

    def __init__(self, target: str, fault: Callable[[str, str, int], str | None]) -> None:
        import httpx

        self.target = target.rstrip("/")
        self.fault = fault
        self.count = 0
        self.faults: list[tuple[str, str, str]] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    proxy.count += 1
                    n = proxy.count
                action = proxy.fault(self.command, self.path, n)
                if action == "refuse":
                    proxy.faults.append((self.command, self.path, action))
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                resp = httpx.request(self.command, proxy.target + self.path, headers=headers, content=body,
                                     timeout=300)
                if action == "drop":
                    proxy.faults.append((self.command, self.path, action))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """The URL of a port nothing listens on (a stopped server)."""
    from pipelines.ls_server import free_port

    return f"http://127.0.0.1:{free_port()}"
