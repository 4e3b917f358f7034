"""The gate every request passes before a route sees it: Host, token, Origin, body type and size, and the
last line of defence against a bug.

One ASGI middleware, so the same checks cover the API, the media, the page's assets and the WebSocket;
no route can forget them.

- **Host** must name this server (guards a loopback server against DNS rebinding): 400.
- **Token** (when the server has one) from ``?token=``, ``Authorization: Bearer``, ``X-Embedlens-Token``
  or the cookie set on the first ``?token=`` request, compared in constant time: 401; a WebSocket is
  refused (HTTP 403) before it is accepted.
- **Origin** of a WebSocket must be one of ours: a page of another site may open sockets to loopback.
- **POST** bodies must be JSON or binary (a cross-site form can only send "simple" types: no CSRF), and
  no larger than the limit for their type: 413, answered before the body is read, or as soon as a body
  without a length passes the limit, so a huge body never reaches the JSON parser.
- **Bugs**: an exception a route did not turn into a 4xx is logged with its traceback and answered
  500 as JSON; the connection and the server's state stay as they were.
"""

from __future__ import annotations

import hmac
import json
import logging
from http.cookies import CookieError, SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

log = logging.getLogger("embedlens.app")

TOKEN_COOKIE = "embedlens_token"
TOKEN_HEADER = "x-embedlens-token"
#: Default body limits: JSON bodies are small requests (a view, tags, a page's worth of ids); binary bodies
#: carry point indices (4 bytes a point) or a bitmask of the plot's points.
MAX_JSON_BODY = 1 << 20
MAX_BINARY_BODY = 64 << 20

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


def host_name(hostport: str) -> str:
    """``"Example.org:5151"`` -> ``"example.org"``, ``"[::1]:80"`` -> ``"[::1]"``."""
    hostport = hostport.strip().lower()
    if hostport.startswith("["):
        return hostport.split("]")[0] + "]"
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


class Guard:
    """ASGI middleware applying the checks above to ``app``.

    ``auth_token``: None serves without a token (only ever on loopback, or by explicit opt-out).
    ``trusted_hosts``: Host names accepted (None: any). ``max_json_body`` / ``max_binary_body``: bytes.
    """

    def __init__(self, app: Any, *, auth_token: str | None, trusted_hosts: list[str] | None,
                 max_json_body: int = MAX_JSON_BODY, max_binary_body: int = MAX_BINARY_BODY) -> None:
        self.app = app
        self.token = auth_token
        self.hosts = {h.lower() for h in trusted_hosts} if trusted_hosts else None
        self.limits = {"application/json": max_json_body, "application/octet-stream": max_binary_body}

    # ------------------------------------------------------------------ checks

    def host_ok(self, headers: dict[str, str]) -> bool:
        return self.hosts is None or host_name(headers.get("host", "")) in self.hosts

    def origin_ok(self, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        return self.hosts is None or not origin or host_name(origin.split("://", 1)[-1]) in self.hosts

    def token_ok(self, scope: Scope, headers: dict[str, str]) -> bool:
        if self.token is None:
            return True
        given = _query_token(scope) or headers.get(TOKEN_HEADER) or _cookie(headers, TOKEN_COOKIE) or ""
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        if not self.host_ok(headers):
            return await _respond(send, 400, "unknown Host header")
        if not self.token_ok(scope, headers):
            return await _respond(send, 401, "missing or wrong auth token")
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            limit = self.limits.get(ctype)
            if limit is None:
                return await _respond(send, 415, "bodies must be application/json or application/octet-stream")
            try:
                receive = await _buffered(receive, headers, limit)
            except BodyTooLarge:
                return await _respond(send, 413, f"the body is larger than {limit} bytes (the limit for {ctype})")
        set_cookie = self.token is not None and _query_token(scope) is not None
        started = False

        async def send_wrapper(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if set_cookie:
                    cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"set-cookie", cookie.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("embedlens app: unexpected error in %s %s", scope["method"], scope["path"])
            if not started:
                await _respond(send, 500, "internal error (logged by the server)")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        if not (self.host_ok(headers) and self.origin_ok(headers) and self.token_ok(scope, headers)):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    # a repeated header keeps its first value: the one a proxy cannot have appended
    out: dict[str, str] = {}
    for k, v in scope.get("headers", []):
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _cookie(headers: dict[str, str], name: str) -> str | None:
    try:
        morsel = SimpleCookie(headers.get("cookie", "")).get(name)
    except CookieError:
        return None
    return morsel.value if morsel else None


async def _buffered(receive: Receive, headers: dict[str, str], limit: int) -> Receive:
    """Read the whole body (at most ``limit`` bytes) and return a ``receive`` that replays it."""
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise BodyTooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return _replay([message])
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


def _replay(messages: list[dict], then: Receive | None = None) -> Receive:
    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()  # after the body: wait for a disconnect, as the server would
        return {"type": "http.disconnect"}

    return receive


async def _respond(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
