"""A small Hugging Face Hub on 127.0.0.1 for tests: the resolve protocol for downloads, and the commit API for uploads.

Downloads: ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` answer with ``X-Repo-Commit``, ``ETag`` (quoted
sha256 plus ``X-Linked-Etag`` / ``X-Linked-Size`` for LFS-like files, the git blob sha1 for small text files) and
``Content-Length``; errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the
real Hub does. Uploads: ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}``
(every file "regular") and ``/api/models/{repo}/commit/{rev}`` (ndjson, base64 contents). Every request is logged in
``server.requests`` as ``(method, path)`` so tests can count downloads.

Example:
    with HubServer() as hub:
        hub.add_file("org/repo", "config.json", b"{}")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".pth", ".bin")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    branches: dict[str, str] = field(default_factory=dict)  # branch / tag -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: content}

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.branches.get(revision)

    def commit(self, files: dict[str, bytes], branch: str = "main", replace: bool = False) -> str:
        parent = self.branches.get(branch, self.branches.get("main"))  # a new branch starts from main
        tree = {} if replace or parent is None else dict(self.commits[parent])
        tree.update(files)
        digest = hashlib.sha1()
        digest.update((parent or "").encode())
        for path in sorted(tree):
            digest.update(path.encode() + b"\0" + hashlib.sha256(tree[path]).digest())
        sha = digest.hexdigest()
        self.commits[sha] = tree
        self.branches[branch] = sha
        return sha


class HubServer:
    """A threaded loopback Hub; use as a context manager. ``url`` is the value for ``HF_ENDPOINT``."""

    def __init__(self, missing_repo_status: int = 404) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.missing_repo_status = missing_repo_status
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- content -------------------------------------------------------------------------------------------------------
    def add_files(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> str:
        """Commit ``files`` (path -> bytes) to branch ``revision`` of ``repo_id`` (created if needed)."""
        with self._lock:
            return self.repos.setdefault(repo_id, Repo()).commit(files, revision)

    def add_file(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> str:
        return self.add_files(repo_id, {path: data}, revision)

    def add_folder(self, repo_id: str, folder: str | Path, revision: str = "main") -> str:
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_files(repo_id, files, revision)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        sha = repo.resolve(revision)
        assert sha is not None
        return repo.commits[sha]

    # -- request log ---------------------------------------------------------------------------------------------------
    def count(self, method: str | None = None, suffix: str = "") -> int:
        """Requests seen with ``method`` (any if None) whose path ends with ``suffix``."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and p.endswith(suffix))

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        # -- helpers ---------------------------------------------------------------------------------------------------
        def _log(self) -> str:
            path = urlsplit(self.path).path
            with server._lock:
                server.requests.append((self.command, unquote(path)))
            return path

        def _reply(self, status: int, headers: dict[str, str], body: bytes = b"", send_body: bool = True) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body and body:
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
            self._reply(status, {**headers, **(extra or {})}, body, send_body=self.command != "HEAD")

        def _json(self, payload: object, status: int = 200) -> None:
            self._reply(status, {"Content-Type": "application/json"}, json.dumps(payload).encode())

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        # -- downloads -------------------------------------------------------------------------------------------------
        def _resolve(self) -> None:
            path = self._log()
            parts = path.strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                self._error(404, "NotFound", f"no route for {path}")
                return
            repo_id, revision, filename = "/".join(parts[:2]), unquote(parts[3]), unquote("/".join(parts[4:]))
            with server._lock:
                repo = server.repos.get(repo_id)
                sha = repo.resolve(revision) if repo else None
                data = repo.commits[sha].get(filename) if repo and sha else None
            if repo is None:
                self._error(server.missing_repo_status, "RepoNotFound", "Repository not found")
                return
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            if data is None:
                self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": sha})
                return
            headers = {"X-Repo-Commit": sha, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if filename.endswith(LFS_SUFFIXES):
                digest = hashlib.sha256(data).hexdigest()
                headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))})
            else:
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
            self._reply(200, headers, data, send_body=self.command == "GET")

        def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
            self._resolve()

        def do_GET(self) -> None:  # noqa: N802
            self._resolve()

        # -- uploads ---------------------------------------------------------------------------------------------------
        def do_POST(self) -> None:  # noqa: N802
            path = self._log()
            body = self._body()
            parts = path.strip("/").split("/")
            if path == "/api/repos/create":
                request = json.loads(body or b"{}")
                repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else None
                repo_id = repo_id or request["name"]
                with server._lock:
                    server.repos.setdefault(repo_id, Repo())
                self._json({"url": f"{server.url}/{repo_id}", "name": repo_id})
            elif path == "/api/validate-yaml":
                self._json({"errors": [], "warnings": []})
            elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                files = json.loads(body)["files"]
                self._json(
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                repo_id, branch = f"{parts[2]}/{parts[3]}", unquote("/".join(parts[5:]))
                files = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                if repo_id not in server.repos:
                    self._error(404, "RepoNotFound", "Repository not found")
                    return
                sha = server.add_files(repo_id, files, branch)
                self._json(
                    {"commitUrl": f"{server.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}
                )
            else:
                self._error(404, "NotFound", f"no route for POST {path}")

    return Handler
