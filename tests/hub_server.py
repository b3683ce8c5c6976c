"""A stand-in for the Hugging Face Hub on 127.0.0.1, so tests run real huggingface_hub code offline.

``LocalHub({repo_id: {path_in_repo: bytes}})`` answers the routes huggingface_hub uses for model repos:

- ``HEAD/GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; ``Range: bytes=a-b`` gives ``206 Partial Content``;
- ``GET /api/models/{repo_id}[/revision/{revision}]``: repo info (``sha``, ``siblings``);
- ``GET /api/models/{repo_id}/tree/{revision}[/{path}]``: a folder listing (``?recursive=true`` too);
- ``POST /api/models/{repo_id}/paths-info/{revision}``: info on given paths.

Every repo has one commit, ``LocalHub.commit``; ``main`` and that sha are its revisions. Errors carry
the Hub's ``X-Error-Code`` so huggingface_hub raises its usual exceptions. Each request is logged with
the bytes of body sent, so a test can prove what was (not) downloaded. ``hold(path)`` makes GETs of a
file wait until released, to interrupt a client mid-download deterministically.

Use ``hub.patch_huggingface_hub(monkeypatch, cache_dir)`` to point huggingface_hub (already imported, so
``HF_ENDPOINT`` alone is too late) at the server in-process; ``hub.environ(cache_dir)`` gives the variables
for a subprocess.
"""

import functools
import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    target: str  # the request line's path and query, as sent
    route: str  # "resolve", "info", "tree", "paths-info" or "unknown"
    repo_id: str | None
    path: str | None  # path in the repo, for resolve/tree routes
    range: tuple[int, int] | None  # inclusive byte range served, for 206 answers
    status: int
    body_bytes: int


class LocalHub:
    """A threaded HTTP server holding ``{repo_id: {path: bytes}}``; use as a context manager."""

    def __init__(self, repos: dict[str, dict[str, bytes]], commit: str = DEFAULT_COMMIT):
        self.repos = repos
        self.commit = commit
        self.log: list[LoggedRequest] = []
        self._log_changed = threading.Condition()
        self._holds: dict[str, threading.Event] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for event in self._holds.values():
            event.set()
        self._server.shutdown()
        self._server.server_close()

    # --- what tests ask -------------------------------------------------------------------------------

    def bytes_served(self, repo_id: str, path: str) -> int:
        """Body bytes sent for GETs of one file (ranges included)."""
        return sum(r.body_bytes for r in self.log if r.route == "resolve" and r.repo_id == repo_id and r.path == path)

    def requests(self, route: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.log if route is None or r.route == route]

    def hold(self, path: str) -> threading.Event:
        """GETs of ``path`` (in any repo) wait before sending their body until the returned event is set."""
        event = self._holds[path] = threading.Event()
        return event

    def wait_for(self, route: str, path: str, timeout: float = 60.0) -> bool:
        """Block until a request for ``path`` on ``route`` has arrived (logged when its answer starts)."""
        with self._log_changed:
            return self._log_changed.wait_for(
                lambda: any(r.route == route and r.path == path for r in self.log), timeout=timeout
            )

    # --- huggingface_hub wiring -----------------------------------------------------------------------

    def environ(self, cache_dir: str | os.PathLike) -> dict[str, str]:
        """Environment for a subprocess that should use this server and cache."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_CACHE": str(cache_dir), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    def patch_huggingface_hub(self, monkeypatch, cache_dir: str | os.PathLike) -> None:
        """Point the already imported huggingface_hub at this server and ``cache_dir``, as HF_ENDPOINT and
        HF_HUB_CACHE would have at import time."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        for key, value in self.environ(cache_dir).items():
            monkeypatch.setenv(key, value)

    # --- internals ------------------------------------------------------------------------------------

    def _record(self, request: LoggedRequest) -> None:
        with self._log_changed:
            self.log.append(request)
            self._log_changed.notify_all()


@functools.lru_cache(maxsize=64)  # a bytes object caches its own hash, so a hit costs no pass over the data
def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=64)
def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes; without this, Nagle's algorithm and the client's
            # delayed ACK add ~40 ms to every request.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        # routing ---------------------------------------------------------------------------------------

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            query = parse_qs(url.query)
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id, rest = "/".join(parts[2:4]), parts[4:]
                if not rest or rest[0] == "revision":
                    return self._info(method, repo_id, rest[1] if len(rest) > 1 else "main")
                if rest[0] == "tree" and len(rest) >= 2:
                    recursive = query.get("recursive", ["false"])[0].lower() == "true"
                    return self._tree(method, repo_id, rest[1], "/".join(rest[2:]), recursive)
                if rest[0] == "paths-info" and len(rest) == 2:
                    return self._paths_info(method, repo_id, rest[1])
            elif len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(method, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self._error(method, "unknown", None, None, 404, "EntryNotFound", f"no route for {url.path}")

        def _files(self, method: str, route: str, repo_id: str, revision: str, path: str | None):
            """The repo's files, or None after answering with the Hub's error for a bad repo/revision."""
            if repo_id not in hub.repos:
                self._error(method, route, repo_id, path, 401, "RepoNotFound", f"Repository {repo_id} not found")
                return None
            if revision not in ("main", hub.commit):
                self._error(method, route, repo_id, path, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return hub.repos[repo_id]

        # routes ----------------------------------------------------------------------------------------

        def _info(self, method: str, repo_id: str, revision: str) -> None:
            files = self._files(method, "info", repo_id, revision, None)
            if files is not None:
                siblings = [{"rfilename": name} for name in sorted(files)]
                self._json(method, "info", repo_id, None, {"id": repo_id, "sha": hub.commit, "private": False,
                                                           "siblings": siblings, "tags": []})

        def _tree(self, method: str, repo_id: str, revision: str, folder: str, recursive: bool) -> None:
            files = self._files(method, "tree", repo_id, revision, folder)
            if files is None:
                return
            prefix = f"{folder}/" if folder else ""
            entries: dict[str, dict] = {}
            for name, data in sorted(files.items()):
                if not name.startswith(prefix):
                    continue
                rest = name[len(prefix):]
                if "/" in rest and not recursive:
                    sub = prefix + rest.split("/")[0]
                    entries[sub] = {"type": "directory", "oid": _git_oid(sub.encode()), "path": sub}
                else:
                    entries[name] = _file_info(name, data)
            if folder and not entries:
                return self._error(method, "tree", repo_id, folder, 404, "EntryNotFound", f"{folder} not found")
            self._json(method, "tree", repo_id, folder, list(entries.values()))

        def _paths_info(self, method: str, repo_id: str, revision: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            files = self._files(method, "paths-info", repo_id, revision, None)
            if files is None:
                return
            out = []
            for path in form.get("paths", []):
                if path in files:
                    out.append(_file_info(path, files[path]))
                elif any(name.startswith(path + "/") for name in files):
                    out.append({"type": "directory", "oid": _git_oid(path.encode()), "path": path})
            self._json(method, "paths-info", repo_id, None, out)

        def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
            files = self._files(method, "resolve", repo_id, revision, path)
            if files is None:
                return
            if path not in files:
                return self._error(method, "resolve", repo_id, path, 404, "EntryNotFound", f"{path} not found")
            data = files[path]
            status, start, end = 200, 0, len(data) - 1
            wanted = self.headers.get("Range")
            if wanted:
                match = _RANGE.match(wanted.strip())
                if not match or (not match.group(1) and not match.group(2)):
                    return self._error(method, "resolve", repo_id, path, 416, None, f"bad range {wanted}")
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
                else:  # suffix range: the last N bytes
                    start = max(0, len(data) - int(match.group(2)))
                if start >= len(data) or start > end:
                    return self._error(method, "resolve", repo_id, path, 416, None, f"range {wanted} not satisfiable")
                status = 206
            body = data[start : end + 1]
            headers = {"X-Repo-Commit": hub.commit, "ETag": f'"{_etag(data)}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            sent = len(body) if method == "GET" else 0
            served = (start, end) if status == 206 else None
            hub._record(LoggedRequest(method, self.path, "resolve", repo_id, path, served, status, sent))
            if method == "GET" and path in hub._holds:
                hub._holds[path].wait(timeout=120)
            self._send(status, headers, body if method == "GET" else b"")

        # answers ---------------------------------------------------------------------------------------

        def _json(self, method: str, route: str, repo_id: str | None, path: str | None, payload: object) -> None:
            body = json.dumps(payload).encode()
            hub._record(LoggedRequest(method, self.path, route, repo_id, path, None, 200, len(body)))
            self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body)),
                             "X-Repo-Commit": hub.commit}, body if method != "HEAD" else b"")

        def _error(self, method: str, route: str, repo_id: str | None, path: str | None, status: int,
                   code: str | None, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            hub._record(LoggedRequest(method, self.path, route, repo_id, path, None, status, 0))
            headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, headers, body if method != "HEAD" else b"")

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (a killed test process)
                self.close_connection = True

    return Handler


def _file_info(path: str, data: bytes) -> dict:
    return {"type": "file", "oid": _git_oid(data), "size": len(data), "path": path,
            "lfs": {"oid": _etag(data), "size": len(data), "pointerSize": 134}}


def repo_from_folder(root: str | os.PathLike, under: str = "") -> dict[str, bytes]:
    """Every file below ``root`` as ``{path_in_repo: bytes}``, placed under the repo folder ``under``."""
    root = Path(root)
    prefix = f"{under.strip('/')}/" if under else ""
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
