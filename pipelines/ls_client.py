"""The one door to Label Studio: every HTTP call, every `label_studio_sdk` import, every failure mapped here.

Why one module: connection refused, timeouts, 5xx, 401 and missing projects must read the same everywhere, be
retried with the same bounded backoff, and never leak the API key. Calls that are safe to repeat (reads, deletes
by id) are retried on connection errors, timeouts and 5xx; calls that create things are retried only when the
request never reached the server (connection refused), and otherwise raise `OutcomeUnknownError`, so the caller
reconciles with what the server holds before sending again (the push does).

The two hot paths, task import and the filtered task listing, go through the SDK's HTTP client with plain JSON
(skipping the SDK's pydantic models, which cost more than the request for 1,000-task pages).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

from curation.errors import LabelStudioError

__all__ = [
    "OutcomeUnknownError",
    "NotFoundError",
    "Connection",
    "resolve_connection",
    "LabelStudioClient",
    "connect",
    "config_controls",
    "LS_DATETIME_FORMAT",
]

T = TypeVar("T")
#: The only datetime format Label Studio's data-manager filters accept.
LS_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ENV_FILE = Path(".labelstudio") / "env"


class OutcomeUnknownError(LabelStudioError):
    """A create call was sent but no answer came (timeout, dropped connection, 5xx): it may have been applied."""


class NotFoundError(LabelStudioError):
    """The server answered 404 (a project, task or annotation that does not exist)."""


@dataclass(frozen=True)
class Connection:
    """Where Label Studio runs and the key to use; `repr` never shows the key."""

    url: str
    api_key: str
    url_from: str
    key_from: str

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, url_from={self.url_from!r}, key_from={self.key_from!r})"


def _env_files(config_path: Path | None) -> list[Path]:
    folders: list[Path] = []
    if config_path is not None:
        folders.append(config_path.resolve().parent)
    here = Path.cwd().resolve()
    folders.extend([here, *here.parents])
    seen: list[Path] = []
    for f in folders:
        candidate = f / _ENV_FILE
        if candidate not in seen:
            seen.append(candidate)
    return seen


def resolve_connection(config: Any) -> Connection:
    """LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY from the environment, else `[labelstudio]` in the config, else the
    nearest `.labelstudio/env` (next to the config file, else in the working directory or a parent)."""
    from pipelines.ls_server import read_env_file

    ls_cfg = config.labelstudio
    url, url_from = os.environ.get("LABEL_STUDIO_URL"), "environment (LABEL_STUDIO_URL)"
    key, key_from = os.environ.get("LABEL_STUDIO_API_KEY"), "environment (LABEL_STUDIO_API_KEY)"
    if not url and ls_cfg.url:
        url, url_from = ls_cfg.url, "config (labelstudio.url)"
    if not key and ls_cfg.api_key:
        key, key_from = ls_cfg.api_key, "config (labelstudio.api_key)"
    if not url or not key:
        for path in _env_files(getattr(config, "path", None)):
            values = read_env_file(path)
            if not values:
                continue
            if not url and values.get("LABEL_STUDIO_URL"):
                url, url_from = values["LABEL_STUDIO_URL"], str(path)
            if not key and values.get("LABEL_STUDIO_API_KEY"):
                key, key_from = values["LABEL_STUDIO_API_KEY"], str(path)
            break
    if not url or not key:
        missing = " and ".join(n for n, v in (("LABEL_STUDIO_URL", url), ("LABEL_STUDIO_API_KEY", key)) if not v)
        raise LabelStudioError(
            f"No Label Studio connection: {missing} is not set.",
            hint="start a local server with `make labelstudio` (writes .labelstudio/env), or set LABEL_STUDIO_URL "
            "and LABEL_STUDIO_API_KEY, or labelstudio.url / labelstudio.api_key in curate.toml",
        )
    return Connection(url=url.rstrip("/"), api_key=key, url_from=url_from, key_from=key_from)


def config_controls(label_config: str) -> dict[str, dict[str, Any]]:
    """Controls of a label config by name: tag, labels, to_name (parsed with the SDK's LabelInterface).

    Raises ValueError when the XML is not a valid label config.
    """
    from label_studio_sdk.label_interface import LabelInterface

    try:
        li = LabelInterface(label_config)
    except Exception as exc:  # the SDK raises assorted errors for bad XML
        raise ValueError(f"not a valid Label Studio config: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for c in li.controls:
        out[c.name] = {"tag": c.tag, "labels": list(getattr(c, "labels", None) or []),
                       "to_name": list(c.to_name or []), "attr": dict(c.attr or {})}
    objects = {o.name: {"tag": o.tag, "value": o.value} for o in li.objects}
    out["__objects__"] = objects
    return out


class LabelStudioClient:
    """A thin, typed wrapper around `label_studio_sdk.LabelStudio` with retries and clear errors."""

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 120.0, retries: int = 4,
                 backoff_s: float = 0.5) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self._http = self._sdk._client_wrapper.httpx_client

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r})"

    @property
    def sdk(self) -> Any:
        """The underlying SDK client (tests use it to act as annotators)."""
        return self._sdk

    # ------------------------------------------------------------------ error mapping, in one place
    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        attempt = 0
        while True:
            try:
                return fn()
            except ApiError as exc:
                code = exc.status_code or 0
                if code == 401:
                    raise LabelStudioError(
                        f"API key rejected by Label Studio at {self.url} (401) while trying to {what}.",
                        hint="check LABEL_STUDIO_API_KEY (or labelstudio.api_key in curate.toml, or "
                        ".labelstudio/env); a token from another server or a reset data folder is refused",
                    ) from None
                if code == 403:
                    raise LabelStudioError(
                        f"Label Studio at {self.url} refused to {what} (403 forbidden).",
                        hint="use the API key of an administrator of that organisation",
                    ) from None
                if code >= 500 or code in (408, 429):
                    if not idempotent:
                        raise OutcomeUnknownError(
                            f"Label Studio at {self.url} answered {code} while trying to {what}; it may or may not "
                            "have been applied.",
                            hint="run the command again: it reconciles with what the server holds first",
                        ) from None
                    if attempt < self.retries:
                        attempt += 1
                        time.sleep(self.backoff_s * 2 ** (attempt - 1))
                        continue
                    raise LabelStudioError(
                        f"Label Studio at {self.url} answered {code} {_short(exc.body)} while trying to {what}, "
                        f"{attempt + 1} times.",
                        hint=f"check the server's log (for `make labelstudio`: .labelstudio/server.log) and "
                        f"{self.url}/health",
                    ) from None
                if code == 404:
                    raise NotFoundError(
                        f"Label Studio at {self.url} has no such object: could not {what} (404)."
                    ) from None
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused to {what}: {code} {_short(exc.body)}",
                ) from None
            except httpx.ConnectError as exc:
                # Nothing reached the server: always safe to try again.
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                    continue
                raise LabelStudioError(
                    f"Cannot reach Label Studio at {self.url} ({_reason(exc)}) after {attempt + 1} attempts "
                    f"while trying to {what}.",
                    hint="check that the server runs (`make labelstudio`, `python -m pipelines.ls_server status`) "
                    "and that LABEL_STUDIO_URL (or labelstudio.url in curate.toml, or .labelstudio/env) points to it",
                ) from None
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if not idempotent:
                    raise OutcomeUnknownError(
                        f"No answer from Label Studio at {self.url} while trying to {what} ({_reason(exc)}); it may "
                        "or may not have been applied.",
                        hint="run the command again: it reconciles with what the server holds first",
                    ) from None
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff_s * 2 ** (attempt - 1))
                    continue
                raise LabelStudioError(
                    f"No answer from Label Studio at {self.url} within {self.timeout_s:.0f} s ({_reason(exc)}) after "
                    f"{attempt + 1} attempts while trying to {what}.",
                    hint="check that the server is not overloaded (its log, CPU) or raise labelstudio.timeout_s "
                    "in curate.toml",
                ) from None

    def _raw(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
             content: bytes | None = None) -> Any:
        """A plain-JSON request through the SDK's HTTP client (its auth headers, no pydantic models).

        `content`: an already encoded JSON body (the SDK's own encoder costs more than the request for big imports).
        """
        from label_studio_sdk.core.api_error import ApiError

        if content is not None:
            resp = self._http.request(path, method=method, params=params, content=content,
                                      headers={"Content-Type": "application/json"},
                                      request_options={"max_retries": 0})
        else:
            resp = self._http.request(path, method=method, params=params, json=body,
                                      request_options={"max_retries": 0})
        if resp.status_code >= 400:
            try:
                detail: Any = resp.json()
            except ValueError:
                detail = resp.text
            raise ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=detail)
        return resp.json() if resp.content else None

    # ------------------------------------------------------------------ users, health, clock
    def server_time(self) -> datetime:
        """The server's clock (HTTP Date header, whole seconds, rounded down), to bound what a pull has seen."""
        def fetch() -> Any:
            resp = self._http.request("health", method="GET", request_options={"max_retries": 0})
            if resp.status_code >= 500:
                from label_studio_sdk.core.api_error import ApiError

                raise ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=resp.text)
            return resp

        resp = self._call("read the server time", fetch)
        date = resp.headers.get("date")
        if date:
            try:
                return parsedate_to_datetime(date).astimezone(UTC)
            except (TypeError, ValueError):
                pass
        return datetime.now(UTC)

    def whoami(self) -> dict[str, Any]:
        return self._call("read the current user", lambda: self._raw("GET", "api/current-user/whoami"))

    def users(self) -> dict[int, str]:
        """Email per user id (annotations name their annotator by id)."""
        rows = self._call("list users", lambda: self._raw("GET", "api/users/"))
        return {int(u["id"]): str(u.get("email") or u.get("username") or f"user:{u['id']}") for u in rows}

    def invite_url(self) -> str:
        """The organisation's sign-up link: whoever opens it can create an account and join as an annotator."""
        data = self._call("read the invite link", lambda: self._raw("GET", "api/invite"))
        link = str(data["invite_url"])
        return link if link.startswith("http") else f"{self.url}{link}"

    def create_user(self, *, email: str, password: str | None = None, first_name: str = "") -> int:
        """Create a user through the API (or return the id of the one with that email), e.g. to simulate annotators.

        Such a user can be named in `completed_by` but cannot log in to the web UI: people join with `invite_url()`.
        """
        existing = {v: k for k, v in self.users().items()}
        if email in existing:
            return existing[email]
        kwargs: dict[str, Any] = {"username": email.split("@")[0], "email": email, "first_name": first_name}
        if password:
            kwargs["password"] = password
        user = self._call(f"create user {email}", lambda: self._sdk.users.create(**kwargs), idempotent=False)
        return int(user.id)

    # ------------------------------------------------------------------ projects
    def list_projects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"page": page, "page_size": 100, "include": "id,title,task_number"}

            def fetch(params: dict[str, Any] = params) -> Any:
                return self._raw("GET", "api/projects/", params=params)

            data = self._call("list projects", fetch)
            rows = data.get("results", data) if isinstance(data, dict) else data
            out.extend({"id": int(r["id"]), "title": r.get("title") or "", "task_number": r.get("task_number")}
                       for r in rows)
            if not isinstance(data, dict) or not data.get("next"):
                return out
            page += 1

    def get_project(self, project_id: int) -> dict[str, Any]:
        try:
            return self._call(f"read project {project_id}",
                              lambda: self._raw("GET", f"api/projects/{project_id}/"))
        except NotFoundError:
            raise self._missing_project(f"with id {project_id}") from None

    def _missing_project(self, name: str) -> LabelStudioError:
        projects = self.list_projects()
        listing = ", ".join(f"{p['title']!r} (id {p['id']})" for p in projects) or "none"
        return LabelStudioError(
            f"Label Studio at {self.url} has no project {name}. Projects there: {listing}.",
            hint="pass --project with one of those titles or ids, or run `curate push` to create it",
        )

    def find_project(self, name: str) -> dict[str, Any] | None:
        """The project titled `name` (or with id `name`); None when there is none."""
        projects = self.list_projects()
        hits = [p for p in projects if p["title"] == name]
        if not hits and name.isdigit():
            hits = [p for p in projects if p["id"] == int(name)]
        if len(hits) > 1:
            ids = ", ".join(str(p["id"]) for p in hits)
            raise LabelStudioError(
                f"Label Studio at {self.url} has {len(hits)} projects titled {name!r} (ids {ids}).",
                hint="pass --project with the id of the one to use",
            )
        return hits[0] if hits else None

    def require_project(self, name: str) -> dict[str, Any]:
        found = self.find_project(name)
        if found is None:
            raise self._missing_project(repr(name))
        return found

    def create_project(self, *, title: str, label_config: str, maximum_annotations: int = 1,
                       description: str = "") -> dict[str, Any]:
        body = {"title": title, "label_config": label_config, "maximum_annotations": maximum_annotations,
                "description": description, "show_collab_predictions": True, "show_skip_button": True,
                "overlap_cohort_percentage": 100}
        return self._call(f"create project {title!r}", lambda: self._raw("POST", "api/projects/", body=body),
                          idempotent=False)

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        return self._call(f"update project {project_id}",
                          lambda: self._raw("PATCH", f"api/projects/{project_id}/", body=fields))

    def delete_project(self, project_id: int) -> None:
        self._call(f"delete project {project_id}", lambda: self._raw("DELETE", f"api/projects/{project_id}/"))

    # ------------------------------------------------------------------ tasks
    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any] | str]) -> list[int]:
        """Create tasks in one request; their ids in the order sent. Never retried once sent.

        Each task is a dict or its JSON text (the push encodes each task once, to check its size).
        """
        parts = [t if isinstance(t, str) else json.dumps(t, ensure_ascii=False) for t in tasks]
        body = ("[" + ",".join(parts) + "]").encode("utf-8")
        data = self._call(
            f"import {len(tasks)} tasks into project {project_id}",
            lambda: self._raw("POST", f"api/projects/{project_id}/import", params={"return_task_ids": "true"},
                              content=body),
            idempotent=False,
        )
        ids = [int(i) for i in (data or {}).get("task_ids") or []]
        if len(ids) != len(tasks):
            raise OutcomeUnknownError(
                f"Label Studio at {self.url} reported {len(ids)} task ids for {len(tasks)} tasks sent to project "
                f"{project_id}.",
                hint="run the command again: it reconciles with what the server holds first",
            )
        return ids

    def list_tasks(
        self,
        project_id: int,
        *,
        include: Sequence[str],
        filters: Sequence[dict[str, Any]] = (),
        ordering: str | None = None,
        all_fields: bool = False,
        page_size: int = 1000,
        page: int = 1,
        task_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """One page of the data-manager task list, filtered, with only the `include` fields (plain dicts).

        Pages of about 1,000 are cheapest per task (measured: 5,000 cost 8 times 1,000). `task_ids`: only those.
        """
        query: dict[str, Any] = {}
        if filters:
            query["filters"] = {"conjunction": "and", "items": list(filters)}
        if ordering:
            query["ordering"] = [ordering]
        if task_ids is not None:
            query["selectedItems"] = {"all": False, "included": [int(t) for t in task_ids]}
        params: dict[str, Any] = {"project": project_id, "page": page, "page_size": page_size,
                                  "include": ",".join(include)}
        if query:
            params["query"] = json.dumps(query)
        if all_fields:
            params["fields"] = "all"
        def fetch() -> list[dict[str, Any]]:
            data = self._raw("GET", "api/tasks", params=params)
            return list(data.get("tasks", [])) if isinstance(data, dict) else list(data)

        try:
            return self._call(f"list tasks of project {project_id}", fetch)
        except NotFoundError:
            if page > 1:  # past the last page
                return []
            raise

    def iter_tasks(self, project_id: int, *, include: Sequence[str], filters: Sequence[dict[str, Any]] = (),
                   page_size: int = 1000, all_fields: bool = False, after_id: int = 0
                   ) -> Iterator[list[dict[str, Any]]]:
        """Pages of tasks with id > `after_id`, ordered by id, by keyset (id > last), so pages never shift."""
        last = after_id
        while True:
            page = self.list_tasks(
                project_id, include=include, all_fields=all_fields, page_size=page_size,
                filters=[*filters, {"filter": "filter:tasks:id", "operator": "greater", "type": "Number",
                                    "value": last}],
            )
            if not page:
                return
            yield page
            last = max(int(t["id"]) for t in page)
            if len(page) < page_size:
                return

    def run_action(self, project_id: int, action: str, task_ids: Sequence[int]) -> Any:
        """A data-manager action on some tasks (e.g. `predictions_to_annotations`: accept pre-annotations)."""
        body = {"selectedItems": {"all": False, "included": [int(t) for t in task_ids]}}
        return self._call(f"run action {action} on {len(task_ids)} tasks of project {project_id}",
                          lambda: self._raw("POST", "api/dm/actions", params={"id": action, "project": project_id},
                                            body=body), idempotent=False)

    def delete_tasks(self, project_id: int, task_ids: Sequence[int]) -> None:
        for tid in task_ids:
            path = f"api/tasks/{int(tid)}/"
            self._call(f"delete task {tid}", lambda path=path: self._raw("DELETE", path))  # type: ignore[misc]

    # ------------------------------------------------------------------ annotations (annotators in tests, reviews)
    def create_annotation(self, task_id: int, *, result: list[dict[str, Any]], completed_by: int | None = None,
                          lead_time: float | None = None, was_cancelled: bool = False) -> int:
        body: dict[str, Any] = {"result": result, "was_cancelled": was_cancelled}
        if completed_by is not None:
            body["completed_by"] = completed_by
        if lead_time is not None:
            body["lead_time"] = lead_time
        data = self._call(f"annotate task {task_id}",
                          lambda: self._raw("POST", f"api/tasks/{task_id}/annotations/", body=body),
                          idempotent=False)
        return int(data["id"])

    def update_annotation(self, annotation_id: int, *, result: list[dict[str, Any]],
                          lead_time: float | None = None) -> None:
        body: dict[str, Any] = {"result": result}
        if lead_time is not None:
            body["lead_time"] = lead_time
        self._call(f"update annotation {annotation_id}",
                   lambda: self._raw("PATCH", f"api/annotations/{annotation_id}/", body=body))

    def delete_annotation(self, annotation_id: int) -> None:
        self._call(f"delete annotation {annotation_id}",
                   lambda: self._raw("DELETE", f"api/annotations/{annotation_id}/"))

    def close(self) -> None:
        self._http.httpx_client.close()


def connect(config: Any) -> LabelStudioClient:
    """A client for the configured server (see `resolve_connection`), with the config's timeout and retries."""
    conn = resolve_connection(config)
    ls_cfg = config.labelstudio
    return LabelStudioClient(conn.url, conn.api_key, timeout_s=ls_cfg.timeout_s, retries=ls_cfg.retries)


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text
