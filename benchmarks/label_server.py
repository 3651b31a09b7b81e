"""``prefbench label serve``: the labelling page and its small JSON API.

Routes (every one takes ``token`` as a query parameter or the ``X-Prefbench-Token``
header when the server was started with a token):

- ``GET /``: the page (:file:`label_page.html`).
- ``GET /api/next?labeller=NAME``: ``{"query": {id, kind, prompt, left, right} | null,
  "progress": {answered, waiting, labellers}}``; for clips ``left``/``right`` are URLs.
- ``POST /api/answer`` with ``{"query", "labeller", "choice"}`` (``left``, ``right``,
  ``equal``, ``cant_tell``): ``{"progress": ...}``; 404 for an unknown query, 409 for a
  closed one or a second answer by the same labeller, 400 for a malformed body, 413
  for one over :data:`MAX_BODY` bytes.
- ``GET /media/NAME``: a clip of the queue (names are checked: no paths).

The server binds 127.0.0.1 unless told otherwise; any other address needs a token.
Every error is a 4xx with ``{"error": message}``, never a 500 for bad input.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prefbench.envs.human.queue import LabelQueue, QueueError, media_name_ok

#: The largest request body accepted, in bytes (an answer is under 200).
MAX_BODY = 4096
PAGE = Path(__file__).with_name("label_page.html")
_TYPES = {".webp": "image/webp", ".gif": "image/gif", ".png": "image/png"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LabelServer(ThreadingHTTPServer):
    """The HTTP server of one queue.

    Args:
        queue: The label queue it serves.
        host: Address to bind.
        port: Port to bind (0: any free one).
        token: Secret every request must carry (``""``: none; required off loopback).

    Raises:
        ValueError: A non-loopback ``host`` without a token.
        OSError: The port is in use.
    """

    daemon_threads = True
    # A restarted server takes its port back at once (TIME_WAIT); a port another
    # process listens on is still refused on Linux.
    allow_reuse_address = True

    def __init__(
        self, queue: LabelQueue, host: str = "127.0.0.1", port: int = 8765, token: str = ""
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(f"binding {host} needs a token (--token or PREFBENCH_LABEL_TOKEN)")
        self.queue, self.token = queue, token
        self.page = PAGE.read_bytes()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """The page's address (with its token)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")


class _Handler(BaseHTTPRequestHandler):
    server: LabelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request would drown the run's own output

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        token = self.server.token
        if not token:
            return True
        given = self.headers.get("X-Prefbench-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), token.encode())

    def _route(self) -> tuple[str, dict[str, list[str]]] | None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if not self._authorised(query):
            self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
            return None
        return parts.path, query

    # -------------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802
        route = self._route()
        if route is None:
            return
        path, query = route
        try:
            if path == "/":
                self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
            elif path == "/api/next":
                labeller = (query.get("labeller") or [""])[0]
                item = self.server.queue.next_query(labeller)
                if item is not None and item["kind"] == "clips":
                    item["left"], item["right"] = (f"/media/{item[s]}" for s in ("left", "right"))
                self._json(
                    HTTPStatus.OK, {"query": item, "progress": self.server.queue.progress(labeller)}
                )
            elif path == "/api/progress":
                labeller = (query.get("labeller") or [None])[0]
                self._json(HTTPStatus.OK, self.server.queue.progress(labeller))
            elif path.startswith("/media/"):
                self._media(path.removeprefix("/media/"))
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {path}")
        except QueueError as exc:
            self._error(exc.status, str(exc))

    def _media(self, name: str) -> None:
        path = self.server.queue.media / name
        if not media_name_ok(name) or not path.is_file():
            self._error(HTTPStatus.NOT_FOUND, "no such media file")
            return
        self._send(HTTPStatus.OK, path.read_bytes(), _TYPES[path.suffix])

    def do_POST(self) -> None:  # noqa: N802
        route = self._route()
        if route is None:
            return
        path, _ = route
        if path != "/api/answer":
            self._error(HTTPStatus.NOT_FOUND, f"no route {path}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"bodies are at most {MAX_BODY} bytes")
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("not an object")
            query, labeller, choice = body["query"], body["labeller"], body["choice"]
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            self._error(
                HTTPStatus.BAD_REQUEST,
                f"the body must be JSON with query, labeller and choice ({exc})",
            )
            return
        if not all(isinstance(v, str) for v in (query, labeller, choice)):
            self._error(HTTPStatus.BAD_REQUEST, "query, labeller and choice must be strings")
            return
        try:
            self.server.queue.answer(query, labeller, choice)
            self._json(HTTPStatus.OK, {"progress": self.server.queue.progress(labeller)})
        except QueueError as exc:
            self._error(exc.status, str(exc))


def serve(queue_dir: Path, host: str, port: int, token: str) -> None:
    """Serve ``queue_dir`` until interrupted (``prefbench label serve``).

    Raises:
        QueueError / ValueError: A folder that is not a queue, or a bad bind.
        OSError: The port is in use.
    """
    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(16)
    queue = LabelQueue(queue_dir)
    try:
        server = LabelServer(queue, host, port, token)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    print(f"labelling page: {server.url}  (queue {queue.folder}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        print("label server stopped", file=sys.stderr)
