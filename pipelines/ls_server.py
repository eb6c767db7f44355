"""A local Label Studio server for annotators and tests: install, start, stop, status.

Why a module and not a shell script: `make labelstudio`, `make labelstudio-stop` and the test fixtures share one
code path, so the environment the server sees (clean and explicit: Label Studio also reads plain HOST, PORT,
USERNAME, PASSWORD, DEBUG from the environment), the port check (a busy port makes Label Studio silently move to the
next one) and the credentials file are the same everywhere.

Layout of the data folder (default `.labelstudio/`): `data/` (Label Studio's own data and SQLite database),
`server.log`, `server.pid`, and `env` (mode 0600) with LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY and the admin login.
The admin user and its API token are created once, on the first start of an empty data folder; later starts reuse
them. The key is never printed or logged.

Run as `python -m pipelines.ls_server start|stop|status [--data-dir DIR] [--port P] [--venv DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from curation.errors import LabelStudioError

__all__ = [
    "LS_VERSION",
    "DEFAULT_DATA_DIR",
    "DEFAULT_VENV",
    "DEFAULT_PORT",
    "ServerInfo",
    "install",
    "free_port",
    "server_env",
    "read_env_file",
    "start",
    "stop",
    "status",
    "main",
]

LS_VERSION = "1.23.2"
DEFAULT_DATA_DIR = Path(".labelstudio")
DEFAULT_VENV = Path(".ls-venv")
DEFAULT_PORT = 8080
ADMIN_EMAIL = "admin@example.com"
_ENV_FILE = "env"
_PID_FILE = "server.pid"
_LOG_FILE = "server.log"
# Environment variables passed through to the server: nothing else leaks in.
_PASS_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True)
class ServerInfo:
    """A running server: where it listens and how to log in (`api_key` and `password` are secrets)."""

    url: str
    port: int
    pid: int
    data_dir: Path
    username: str
    password: str
    api_key: str
    started: bool

    def __repr__(self) -> str:
        return f"ServerInfo(url={self.url!r}, pid={self.pid}, data_dir={str(self.data_dir)!r}, started={self.started})"


def _ls_executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


def _installed_version(venv: Path) -> str | None:
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    # Never `label-studio --version`: it starts a server on 0.0.0.0:8080.
    out = subprocess.run(
        [str(py), "-c", "import label_studio; print(label_studio.__version__)"],
        capture_output=True, text=True, check=False, env={"PATH": os.environ.get("PATH", "")},
    )
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def install(*, venv: Path = DEFAULT_VENV, version: str = LS_VERSION, quiet: bool = False) -> Path:
    """Install Label Studio `version` into its own venv (skipped when already there); returns its executable."""
    venv = venv.resolve()
    if _installed_version(venv) == version and _ls_executable(venv).exists():
        return _ls_executable(venv)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(venv / "bin" / "pip"), "install", f"label-studio=={version}"]
    if quiet:
        cmd.insert(2, "--quiet")
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0 or _installed_version(venv) != version:
        raise LabelStudioError(
            f"Installing label-studio=={version} into {venv} failed (pip exit code {done.returncode}).",
            hint="check network access to PyPI and free disk space (about 1 GB), then run `make labelstudio` again",
        )
    return _ls_executable(venv)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (the format `set -a; . .labelstudio/env` understands)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = value.strip().strip("'\"")
    return out


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    """Written with mode 0600 from the start (no window where another user could read the key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# Written by `make labelstudio` (pipelines/ls_server.py). Secret: keep mode 0600.\n")
        for k, v in values.items():
            f.write(f"{k}={v}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def server_env(*, data_dir: Path, host: str, port: int, username: str, password: str, token: str) -> dict[str, str]:
    """The whole environment of the server process: explicit settings only."""
    data = data_dir / "data"
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    env.update(
        {
            "HOME": str(data_dir),
            "LABEL_STUDIO_BASE_DATA_DIR": str(data),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_HOST": f"http://{host}:{port}",
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "XDG_CONFIG_HOME": str(data_dir / "xdg" / "config"),
            "XDG_DATA_HOME": str(data_dir / "xdg" / "data"),
            "XDG_CACHE_HOME": str(data_dir / "xdg" / "cache"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"label-studio" in cmdline.read_bytes() or b"label_studio" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / _PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _health(url: str, *, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:  # noqa: S310 - local URL
            return bool(json.loads(resp.read().decode() or "{}").get("status") == "UP")
    except (OSError, ValueError):
        return False


def _key_accepted(url: str, key: str) -> bool:
    req = urllib.request.Request(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local URL
            return resp.status == 200
    except urllib.error.HTTPError:
        return False
    except OSError:
        return False


def _info(data_dir: Path, values: dict[str, str], pid: int, started: bool) -> ServerInfo:
    url = values["LABEL_STUDIO_URL"]
    return ServerInfo(
        url=url, port=int(url.rsplit(":", 1)[1]), pid=pid, data_dir=data_dir,
        username=values["LABEL_STUDIO_USERNAME"], password=values["LABEL_STUDIO_PASSWORD"],
        api_key=values["LABEL_STUDIO_API_KEY"], started=started,
    )


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def status(*, data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, object]:
    """Whether a server of this data folder runs and answers; never includes the key."""
    data_dir = data_dir.resolve()
    values = read_env_file(data_dir / _ENV_FILE)
    pid = _read_pid(data_dir)
    alive = pid is not None and _pid_alive(pid)
    url = values.get("LABEL_STUDIO_URL")
    healthy = bool(alive and url and _health(url))
    return {"running": healthy, "pid": pid if alive else None, "url": url, "data_dir": str(data_dir),
            "env_file": str(data_dir / _ENV_FILE), "username": values.get("LABEL_STUDIO_USERNAME")}


def start(
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    venv: Path = DEFAULT_VENV,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout_s: float = 300.0,
    install_missing: bool = True,
) -> ServerInfo:
    """Start the server in the background (or find it already running) and return how to reach it.

    Idempotent: a server already running from `data_dir` is returned with `started=False`. The port is the one
    given, else the one used last time from this folder, else 8080; it must be free (Label Studio would otherwise
    quietly pick another one).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    env_path = data_dir / _ENV_FILE
    values = read_env_file(env_path)
    pid = _read_pid(data_dir)
    if pid is not None and _pid_alive(pid) and values.get("LABEL_STUDIO_URL"):
        if _health(values["LABEL_STUDIO_URL"], timeout=10):
            return _info(data_dir, values, pid, started=False)
        raise LabelStudioError(
            f"A Label Studio process (pid {pid}) of {data_dir} runs but {values['LABEL_STUDIO_URL']}/health "
            "does not answer UP.",
            hint=f"wait a minute if it is still starting, else stop it (`make labelstudio-stop`); log: "
            f"{data_dir / _LOG_FILE}",
        )

    executable = install(venv=venv) if install_missing else _ls_executable(venv.resolve())
    if not executable.exists():
        raise LabelStudioError(
            f"Label Studio is not installed in {venv.resolve()}.",
            hint=f"run `python3 -m venv {venv} && {venv}/bin/pip install label-studio=={LS_VERSION}` "
            "or `make labelstudio`",
        )
    first_start = not (data_dir / "data" / "label_studio.sqlite3").exists()
    if first_start or not values.get("LABEL_STUDIO_API_KEY"):
        if not first_start:
            raise LabelStudioError(
                f"{env_path} is missing or has no LABEL_STUDIO_API_KEY, but {data_dir / 'data'} already holds a "
                "Label Studio database, so the admin token cannot be recreated.",
                hint=f"restore {env_path}, or remove {data_dir} to start from scratch (its projects are lost)",
            )
        values = {
            "LABEL_STUDIO_USERNAME": ADMIN_EMAIL,
            "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(18),
            "LABEL_STUDIO_API_KEY": secrets.token_hex(20),
        }
    if port is None:
        old = values.get("LABEL_STUDIO_URL")
        port = int(old.rsplit(":", 1)[1]) if old else DEFAULT_PORT
    if _port_busy(host, port):
        raise LabelStudioError(
            f"Port {port} on {host} is already in use, so Label Studio cannot listen there.",
            hint="stop what listens there, or pass another port (`python -m pipelines.ls_server start --port P`)",
        )
    url = f"http://{host}:{port}"
    values = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": values["LABEL_STUDIO_API_KEY"],
              "LABEL_STUDIO_USERNAME": values["LABEL_STUDIO_USERNAME"],
              "LABEL_STUDIO_PASSWORD": values["LABEL_STUDIO_PASSWORD"]}
    _write_env_file(env_path, values)

    env = server_env(data_dir=data_dir, host=host, port=port, username=values["LABEL_STUDIO_USERNAME"],
                     password=values["LABEL_STUDIO_PASSWORD"], token=values["LABEL_STUDIO_API_KEY"])
    (data_dir / "data").mkdir(exist_ok=True)
    log_path = data_dir / _LOG_FILE
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--internal-host", host, "--port", str(port)],
            cwd=str(data_dir), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (data_dir / _PID_FILE).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (data_dir / _PID_FILE).unlink(missing_ok=True)
            raise LabelStudioError(
                f"Label Studio exited with code {proc.returncode} while starting.",
                hint=f"see {log_path}; last lines:\n{_log_tail(log_path)}",
            )
        if _health(url):
            break
        time.sleep(0.5)
    else:
        stop(data_dir=data_dir)
        raise LabelStudioError(
            f"Label Studio did not answer on {url}/health within {timeout_s:.0f} s.",
            hint=f"see {log_path}; last lines:\n{_log_tail(log_path)}",
        )
    if not _key_accepted(url, values["LABEL_STUDIO_API_KEY"]):
        stop(data_dir=data_dir)
        raise LabelStudioError(
            f"Label Studio runs on {url} but refuses the API key stored in {env_path}.",
            hint=f"the data folder was probably created by another tool; remove {data_dir} to start from scratch",
        )
    return _info(data_dir, values, proc.pid, started=True)


def stop(*, data_dir: Path = DEFAULT_DATA_DIR, timeout_s: float = 30.0) -> bool:
    """Stop the server of `data_dir` with SIGTERM (it ignores SIGINT); True when one was running."""
    data_dir = data_dir.resolve()
    pid = _read_pid(data_dir)
    if pid is None or not _pid_alive(pid):
        (data_dir / _PID_FILE).unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _pid_alive(pid):
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    (data_dir / _PID_FILE).unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ls_server", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "install"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(f"Label Studio {LS_VERSION} installed: {install(venv=args.venv)}")
        elif args.command == "start":
            info = start(data_dir=args.data_dir, venv=args.venv, host=args.host, port=args.port,
                         timeout_s=args.timeout)
            verb = "started" if info.started else "already running"
            print(f"Label Studio {verb} at {info.url} (pid {info.pid}).")
            print(f"Log in as {info.username}; password and API key are in {info.data_dir / _ENV_FILE} (mode 0600).")
            print(f"Use it from a shell: set -a; . {info.data_dir / _ENV_FILE}; set +a")
        elif args.command == "stop":
            print("Label Studio stopped." if stop(data_dir=args.data_dir) else "Label Studio was not running.")
        else:
            st = status(data_dir=args.data_dir)
            print(f"running at {st['url']} (pid {st['pid']})" if st["running"] else "not running")
            return 0 if st["running"] else 1
    except LabelStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
