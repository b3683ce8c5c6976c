"""A stand-in for the Hugging Face Hub on 127.0.0.1, so tests run real huggingface_hub code offline.

``LocalHub({repo_id: {path_in_repo: bytes}})`` answers the routes huggingface_hub uses for model repos:

- ``HEAD/GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; ``Range: bytes=a-b`` gives ``206 Partial Content``;
- ``GET /api/models/{repo_id}[/revision/{revision}]``: repo info (``sha``, ``siblings``);
- ``GET /api/models/{repo_id}/tree/{revision}[/{path}]``: a folder listing (``?recursive=true`` too);
- ``POST /api/models/{repo_id}/paths-info/{revision}``: info on given paths.

Dataset repos are held under ``"datasets/OWNER/NAME"`` in the same mapping and answer the same download
routes under ``/api/datasets/...`` and ``/datasets/{repo_id}/resolve/...`` (what the ``datasets`` library
and ``HfFileSystem`` read); uploads are for model repos only.

and, for uploads (``HfApi.create_repo``, ``create_branch``, ``upload_folder``, ``push_to_hub``):

- ``POST /api/repos/create``: a new empty repo (409 if it exists), ``visibility: private`` honoured;
- ``POST /api/validate-yaml``: the model card's metadata (must open with a ``---`` YAML block);
- ``POST /api/models/{repo_id}/preupload/{revision}``: ``lfs`` for weights (``.safetensors``, ``.onnx``,
  ...) and files of 10 MB or more, ``regular`` otherwise, as the Hub's default ``.gitattributes`` does;
- ``POST /{repo_id}.git/info/lfs/objects/batch``: LFS "basic" transfer, uploads to
  ``PUT /lfs-upload/{sha256}`` (checked against the hash) and ``POST /lfs-verify``;
- ``POST /api/models/{repo_id}/commit/{revision}``: the NDJSON commit (``file`` base64, ``lfsFile`` by
  sha256, ``deletedFile``/``deletedFolder``); the branch then serves the new files under a new commit sha;
- ``POST /api/models/{repo_id}/branch/{branch}``: a branch from ``main``.

Writes need ``Authorization: Bearer <token>`` with a token of ``LocalHub(tokens={token: user})`` (401
otherwise, as the Hub answers a bad token) and a repo in that user's namespace (403 otherwise). Private
repos are readable only with their owner's token. The stand-in speaks LFS, not Xet: ``patch_huggingface_hub``
and ``environ`` set ``HF_HUB_DISABLE_XET`` so huggingface_hub uploads through LFS, as it does for any Hub
without Xet.

Each repo starts with one commit, ``LocalHub.commit``; a branch's revisions are its name and its head
sha. Errors carry the Hub's ``X-Error-Code`` so huggingface_hub raises its usual exceptions. Each request
is logged with the bytes of body sent and received, so a test can prove what was (not) transferred.
``hold(path)`` makes GETs of a file wait until released, to interrupt a client mid-download
deterministically.

Use ``hub.patch_huggingface_hub(monkeypatch, cache_dir)`` to point huggingface_hub (already imported, so
``HF_ENDPOINT`` alone is too late) at the server in-process; ``hub.environ(cache_dir)`` gives the variables
for a subprocess.
"""

import base64
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
#: stored through LFS whatever their size (the Hub's default .gitattributes); others from 10 MB on
LFS_SUFFIXES = (".safetensors", ".onnx", ".data", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 * 1024 * 1024
INVALID_TOKEN = "Invalid credentials in Authorization header"


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    target: str  # the request line's path and query, as sent
    route: str  # "resolve", "info", "tree", "paths-info", "create", "validate-yaml", "preupload", "lfs-batch",
    #             "lfs-upload", "lfs-verify", "commit", "branch" or "unknown"
    repo_id: str | None
    path: str | None  # path in the repo, for resolve/tree routes
    range: tuple[int, int] | None  # inclusive byte range served, for 206 answers
    status: int
    body_bytes: int  # sent
    received_bytes: int = 0


class LocalHub:
    """A threaded HTTP server holding ``{repo_id: {path: bytes}}``; use as a context manager."""

    def __init__(self, repos: dict[str, dict[str, bytes]], commit: str = DEFAULT_COMMIT,
                 tokens: dict[str, str] | None = None):
        self.repos = repos  # the files of each repo's main branch
        self.commit = commit
        self.tokens = dict(tokens or {})  # token -> user name, the namespace it may write to
        self.branches: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> branch other than main -> files
        self.heads: dict[tuple[str, str], str] = {}  # (repo, branch) -> head commit sha; absent: ``commit``
        self.private: set[str] = set()
        self.lfs_objects: dict[str, bytes] = {}  # sha256 hex -> content uploaded through LFS
        self.lfs_upload_base: str | None = None  # where LFS batch answers send uploads; None: this server
        self.commits: list[dict] = []  # every commit received: repo_id, branch, oid, summary, paths
        self._lock = threading.Lock()
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

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        """The files a branch holds now."""
        return self.repos[repo_id] if branch == "main" else self.branches[repo_id][branch]

    def bytes_received(self, route: str) -> int:
        return sum(r.received_bytes for r in self.log if r.route == route)

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
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1"}

    def patch_huggingface_hub(self, monkeypatch, cache_dir: str | os.PathLike) -> None:
        """Point the already imported huggingface_hub at this server and ``cache_dir``, as HF_ENDPOINT and
        HF_HUB_CACHE would have at import time."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        template = self.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        for key, value in self.environ(cache_dir).items():
            monkeypatch.setenv(key, value)

    # --- internals ------------------------------------------------------------------------------------

    def _snapshot(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(head sha, files) of a branch given by name or by its head sha."""
        branches = {"main": self.repos[repo_id], **self.branches.get(repo_id, {})}
        if revision in branches:
            return self.heads.get((repo_id, revision), self.commit), branches[revision]
        for name, files in branches.items():
            if self.heads.get((repo_id, name), self.commit) == revision:
                return revision, files
        return None

    def _apply_commit(self, repo_id: str, branch: str, files: dict[str, bytes], summary: str) -> str:
        parent = self.heads.get((repo_id, branch), self.commit)
        digest = hashlib.sha1(parent.encode() + summary.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + _etag(files[name]).encode())
        oid = digest.hexdigest()
        if branch == "main":
            self.repos[repo_id] = files
        else:
            self.branches.setdefault(repo_id, {})[branch] = files
        self.heads[(repo_id, branch)] = oid
        self.commits.append({"repo_id": repo_id, "branch": branch, "oid": oid, "summary": summary,
                             "paths": sorted(files)})
        return oid

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
            self._received = 0

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        # routing ---------------------------------------------------------------------------------------

        def _dispatch(self, method: str) -> None:
            self._received = 0
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/")[1:]]
            query = parse_qs(url.query)
            if method == "POST" and parts == ["api", "repos", "create"]:
                return self._create_repo()
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return self._validate_yaml()
            if method == "PUT" and len(parts) == 2 and parts[0] == "lfs-upload":
                return self._lfs_upload(parts[1])
            if method == "POST" and parts == ["lfs-verify"]:
                return self._lfs_verify()
            if (method == "POST" and len(parts) == 6 and parts[1].endswith(".git")
                    and parts[2:] == ["info", "lfs", "objects", "batch"]):
                return self._lfs_batch(f"{parts[0]}/{parts[1][:-4]}")
            if parts[:2] in (["api", "models"], ["api", "datasets"]) and len(parts) >= 4:
                repo_id, rest = "/".join(parts[2:4]), parts[4:]
                if parts[1] == "datasets":
                    repo_id = f"datasets/{repo_id}"
                    if rest and rest[0] not in ("revision", "tree", "paths-info"):
                        return self._error(method, "unknown", repo_id, None, 404, None, f"no route for {url.path}")
                if method == "POST" and len(rest) == 2 and rest[0] in ("preupload", "commit", "branch"):
                    if "create_pr" in query:
                        return self._error(method, rest[0], repo_id, None, 400, None, "pull requests not supported")
                    return {"preupload": self._preupload, "commit": self._commit, "branch": self._branch}[rest[0]](
                        repo_id, rest[1])
                if not rest or rest[0] == "revision":
                    return self._info(method, repo_id, rest[1] if len(rest) > 1 else "main")
                if rest[0] == "tree" and len(rest) >= 2:
                    recursive = query.get("recursive", ["false"])[0].lower() == "true"
                    return self._tree(method, repo_id, rest[1], "/".join(rest[2:]), recursive)
                if rest[0] == "paths-info" and len(rest) == 2:
                    return self._paths_info(method, repo_id, rest[1])
            elif len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
                return self._resolve(method, "/".join(parts[:3]), parts[4], "/".join(parts[5:]))
            elif len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(method, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self._error(method, "unknown", None, None, 404, "EntryNotFound", f"no route for {url.path}")

        # requests --------------------------------------------------------------------------------------

        def _body(self) -> bytes:
            """The request body, sent with Content-Length or chunked."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk
                while self.rfile.readline().strip():  # trailers, then the final blank line
                    pass
                body = b"".join(chunks)
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._received = len(body)
            return body

        def _user(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return hub.tokens.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None

        def _can_write(self, route: str, repo_id: str) -> bool:
            """True for the owner's token; otherwise answers 401 (no or unknown token) or 403 and says False."""
            user = self._user()
            if user is None:
                self._error("POST", route, repo_id, None, 401, None, INVALID_TOKEN)
                return False
            if repo_id.split("/")[0] != user:
                self._error("POST", route, repo_id, None, 403, None,
                            f"You don't have the rights to write to {repo_id} as {user}")
                return False
            return True

        def _files(self, method: str, route: str, repo_id: str, revision: str, path: str | None):
            """(head sha, files) of a revision, or None after answering with the Hub's error."""
            readable = repo_id not in hub.private or repo_id.split("/")[0] == self._user()
            if repo_id not in hub.repos or not readable:
                self._error(method, route, repo_id, path, 401, "RepoNotFound", f"Repository {repo_id} not found")
                return None
            snapshot = hub._snapshot(repo_id, revision)
            if snapshot is None:
                self._error(method, route, repo_id, path, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return snapshot

        # download routes -------------------------------------------------------------------------------

        def _info(self, method: str, repo_id: str, revision: str) -> None:
            snapshot = self._files(method, "info", repo_id, revision, None)
            if snapshot is not None:
                sha, files = snapshot
                siblings = [{"rfilename": name} for name in sorted(files)]
                public_id = repo_id.removeprefix("datasets/")
                info = {"id": public_id, "sha": sha, "private": repo_id in hub.private, "siblings": siblings,
                        "tags": []}
                self._json(method, "info", repo_id, None, info, sha)

        def _tree(self, method: str, repo_id: str, revision: str, folder: str, recursive: bool) -> None:
            snapshot = self._files(method, "tree", repo_id, revision, folder)
            if snapshot is None:
                return
            sha, files = snapshot
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
            self._json(method, "tree", repo_id, folder, list(entries.values()), sha)

        def _paths_info(self, method: str, repo_id: str, revision: str) -> None:
            form = parse_qs(self._body().decode())
            snapshot = self._files(method, "paths-info", repo_id, revision, None)
            if snapshot is None:
                return
            sha, files = snapshot
            out = []
            for path in form.get("paths", []):
                if path in files:
                    out.append(_file_info(path, files[path]))
                elif any(name.startswith(path + "/") for name in files):
                    out.append({"type": "directory", "oid": _git_oid(path.encode()), "path": path})
            self._json(method, "paths-info", repo_id, None, out, sha)

        def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
            snapshot = self._files(method, "resolve", repo_id, revision, path)
            if snapshot is None:
                return
            sha, files = snapshot
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
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_etag(data)}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            sent = len(body) if method == "GET" else 0
            served = (start, end) if status == 206 else None
            hub._record(LoggedRequest(method, self.path, "resolve", repo_id, path, served, status, sent))
            if method == "GET" and path in hub._holds:
                hub._holds[path].wait(timeout=120)
            self._send(status, headers, body if method == "GET" else b"")

        # upload routes ---------------------------------------------------------------------------------

        def _create_repo(self) -> None:
            payload = json.loads(self._body() or b"{}")
            if payload.get("type", "model") != "model":
                return self._error("POST", "create", None, None, 400, None, "the stand-in serves model repos only")
            user = self._user()
            repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
            if not self._can_write("create", repo_id):
                return
            with hub._lock:
                if repo_id in hub.repos:
                    return self._error("POST", "create", repo_id, None, 409, None,
                                       "You already created this model repo", extra={"url": f"{hub.url}/{repo_id}"})
                hub.repos[repo_id] = {}
                if payload.get("visibility") == "private" or payload.get("private"):
                    hub.private.add(repo_id)
            self._json("POST", "create", repo_id, None, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _validate_yaml(self) -> None:
            content = json.loads(self._body()).get("content", "")
            if not content.startswith("---\n") or "\n---\n" not in content[3:]:
                return self._error("POST", "validate-yaml", None, None, 400, None, "no YAML metadata block",
                                   extra={"errors": [{"message": "README.md must open with a --- YAML block"}]})
            self._json("POST", "validate-yaml", None, None, {"errors": [], "warnings": []})

        def _writable_branch(self, route: str, repo_id: str, revision: str) -> dict[str, bytes] | None:
            if repo_id not in hub.repos:
                self._error("POST", route, repo_id, None, 404, "RepoNotFound", f"Repository {repo_id} not found")
                return None
            if not self._can_write(route, repo_id):
                return None
            if revision != "main" and revision not in hub.branches.get(repo_id, {}):
                self._error("POST", route, repo_id, None, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return hub.files(repo_id, revision)

        def _preupload(self, repo_id: str, revision: str) -> None:
            payload = json.loads(self._body())
            if self._writable_branch("preupload", repo_id, revision) is None:
                return
            modes = [{"path": f["path"], "shouldIgnore": False, "oid": None,
                      "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
                      else "regular"} for f in payload["files"]]
            self._json("POST", "preupload", repo_id, None, {"files": modes, "commitOid": hub.commit})

        def _lfs_batch(self, repo_id: str) -> None:
            payload = json.loads(self._body())
            branch = (payload.get("ref") or {}).get("name") or "main"
            if payload.get("operation") != "upload":
                return self._error("POST", "lfs-batch", repo_id, None, 400, None, "only uploads are supported")
            if self._writable_branch("lfs-batch", repo_id, branch) is None:
                return
            objects = []
            for obj in payload["objects"]:
                answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_objects:
                    base = hub.lfs_upload_base or hub.url
                    answer["actions"] = {"upload": {"href": f"{base}/lfs-upload/{obj['oid']}"},
                                         "verify": {"href": f"{hub.url}/lfs-verify"}}
                objects.append(answer)
            self._json("POST", "lfs-batch", repo_id, None, {"transfer": "basic", "objects": objects},
                       content_type="application/vnd.git-lfs+json")

        def _lfs_upload(self, oid: str) -> None:
            data = self._body()  # a presigned storage URL on the Hub: no Authorization
            if hashlib.sha256(data).hexdigest() != oid:
                return self._error("PUT", "lfs-upload", None, oid, 400, None, "content does not match its sha256")
            hub.lfs_objects[oid] = data
            hub._record(LoggedRequest("PUT", self.path, "lfs-upload", None, oid, None, 200, 0, len(data)))
            self._send(200, {"Content-Length": "0"}, b"")

        def _lfs_verify(self) -> None:
            payload = json.loads(self._body())
            stored = hub.lfs_objects.get(payload.get("oid", ""))
            if stored is None or len(stored) != payload.get("size"):
                return self._error("POST", "lfs-verify", None, payload.get("oid"), 404, None, "object not uploaded")
            self._json("POST", "lfs-verify", None, payload["oid"], {})

        def _commit(self, repo_id: str, revision: str) -> None:
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            with hub._lock:
                current = self._writable_branch("commit", repo_id, revision)
                if current is None:
                    return
                files, summary = dict(current), ""
                for line in lines:
                    key, value = line["key"], line["value"]
                    if key == "header":
                        summary = value.get("summary", "")
                    elif key == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif key == "lfsFile":
                        if value["oid"] not in hub.lfs_objects:
                            return self._error("POST", "commit", repo_id, value["path"], 400, None,
                                               f"LFS object {value['oid']} for {value['path']} was never uploaded")
                        files[value["path"]] = hub.lfs_objects[value["oid"]]
                    elif key == "deletedFile":
                        files.pop(value["path"], None)
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        files = {k: v for k, v in files.items() if not k.startswith(prefix)}
                    else:
                        return self._error("POST", "commit", repo_id, None, 400, None, f"unknown operation {key}")
                oid = hub._apply_commit(repo_id, revision, files, summary)
            self._json("POST", "commit", repo_id, None, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                                                         "commitOid": oid, "pullRequestUrl": None})

        def _branch(self, repo_id: str, branch: str) -> None:
            self._body()
            with hub._lock:
                if self._writable_branch("branch", repo_id, "main") is None:
                    return
                if branch == "main" or branch in hub.branches.get(repo_id, {}):
                    return self._error("POST", "branch", repo_id, None, 409, None, f"Reference {branch} already exists")
                hub.branches.setdefault(repo_id, {})[branch] = dict(hub.repos[repo_id])
                hub.heads[(repo_id, branch)] = hub.heads.get((repo_id, "main"), hub.commit)
            self._json("POST", "branch", repo_id, None, {})

        # answers ---------------------------------------------------------------------------------------

        def _json(self, method: str, route: str, repo_id: str | None, path: str | None, payload: object,
                  sha: str | None = None, content_type: str = "application/json") -> None:
            body = json.dumps(payload).encode()
            hub._record(LoggedRequest(method, self.path, route, repo_id, path, None, 200, len(body), self._received))
            self._send(200, {"Content-Type": content_type, "Content-Length": str(len(body)),
                             "X-Repo-Commit": sha or hub.commit}, body if method != "HEAD" else b"")

        def _error(self, method: str, route: str, repo_id: str | None, path: str | None, status: int,
                   code: str | None, message: str, extra: dict | None = None) -> None:
            body = json.dumps({"error": message, **(extra or {})}).encode()
            hub._record(LoggedRequest(method, self.path, route, repo_id, path, None, status, 0, self._received))
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
