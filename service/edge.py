"""The edge: what a request passes before the app reads a byte of its body.

FastAPI reads and parses a body before it runs the route's dependencies, so a key checked there
comes too late: an anonymous 400 MB body was read whole before its 401. Here the declared
``Content-Length`` is checked, the API key is checked (on ``/api/`` and ``/admin/``) and counted
against the key's rate limit, and the body is capped while it streams in.
"""
from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import authenticate_header
from service.errors import ApiError, error_body
from service.ratelimit import over_limit
from service.settings import Settings

log = logging.getLogger("avatar.api")
UPLOAD_PATH = "/api/photos"
MULTIPART_OVERHEAD = 64 * 1024
PHOTO_IN_JSON_PREFIX = "/v2/"  # RunPod's API shape carries the photo in the request body
KEYED_PREFIXES = ("/api/", "/admin/")


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    def limit(self, scope: Scope) -> int:
        if scope["path"] == UPLOAD_PATH and scope["method"] == "POST":
            return self.settings.max_upload_bytes + MULTIPART_OVERHEAD
        if scope["path"].startswith(PHOTO_IN_JSON_PREFIX):  # a base64 photo inside the JSON
            return self.settings.max_upload_bytes * 4 // 3 + MULTIPART_OVERHEAD
        return self.settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope)
        try:
            if scope["path"].startswith(KEYED_PREFIXES):
                await self._admit(scope)
            _check_declared(Headers(scope=scope), limit)
        except ApiError as exc:
            return await _answer(exc, scope, receive, send)
        except Exception:  # the database behind the keys is down: say so, not 500
            log.exception("cannot check the API key")
            return await _answer(ApiError(503, "database_unavailable", "the service cannot check API keys "
                                          "now; try again later"), scope, receive, send)
        cap = _Cap(limit, receive, send)
        try:
            await self.app(scope, cap.receive, cap.send)
        except Exception:
            if not cap.exceeded or cap.started:
                raise
            await _answer(too_large(limit), scope, receive, send)

    async def _admit(self, scope: Scope) -> None:
        svc = scope["app"].state.services
        who = await authenticate_header(svc, Headers(scope=scope).get("authorization", ""))
        wait = await over_limit(svc.redis, who.key_id, self.settings.rate_limit_per_minute)
        if wait is not None:
            raise ApiError(429, "rate_limited", f"over {self.settings.rate_limit_per_minute} requests a minute "
                           "for this API key; retry later", {"Retry-After": str(wait)})
        scope.setdefault("state", {})["principal"] = who


def too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large", f"the request body is over the {limit} byte limit")


def _check_declared(headers: Headers, limit: int) -> None:
    declared = headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise ApiError(400, "invalid_request", "Content-Length is not a number")
    if int(declared) > limit:
        raise too_large(limit)


async def _answer(exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(error_body(exc.code, exc.message), exc.status, exc.headers)(scope, receive, send)


class _Cap:
    """Stops a body (chunked, or longer than declared) once it passes ``limit``, and makes the
    answer a 413 whatever the app made of the cut-off body (a parse error, a 400)."""

    def __init__(self, limit: int, receive: Receive, send: Send):
        self.limit, self._receive, self._send = limit, receive, send
        self.seen, self.exceeded, self.started, self.replaced = 0, False, False, False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.exceeded = True
                raise HTTPException(413, too_large(self.limit).message)
        return message

    async def send(self, message: Message) -> None:
        if self.replaced:
            return
        if message["type"] == "http.response.start" and self.exceeded:
            self.replaced = True
            await _answer(too_large(self.limit), {"type": "http"}, self._receive, self._send)
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)
