"""API key and the two ASGI middlewares in front of the endpoints.

The key is `TRADECAST_API_KEY` when set; otherwise the first `serve` creates `$TRADECAST_HOME/api_key`
(mode 0600) and later runs reuse it. Prediction and admin endpoints need `Authorization: Bearer <key>`;
health, readiness, metrics and the API docs stay open.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

from serving.coalesce import IN_FLIGHT
from tradecast.errors import TradecastError
from tradecast.paths import ensure_dir, home

API_KEY_ENV = "TRADECAST_API_KEY"
OPEN_PATHS = frozenset({"/", "/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content/", "/assets/")


def api_key_path() -> Path:
    """Where a generated key is kept."""
    return home() / "api_key"


def resolve_api_key(create: bool = True) -> tuple[str, Path | None]:
    """(key, file it came from or None for the environment); creates the file (0600) when allowed."""
    env_key = os.environ.get(API_KEY_ENV, "").strip()
    if env_key:
        return env_key, None
    path = api_key_path()
    if not path.exists():
        if not create:
            raise TradecastError(f"no API key: set {API_KEY_ENV} or run `tradecast serve` once to create {path}")
        ensure_dir(path.parent)
        try:  # O_EXCL: when two workers race, one creates and both read the same key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
        except FileExistsError:
            pass
    key = path.read_text().strip()
    if not key:
        raise TradecastError(f"{path} is empty: delete it to generate a new key or set {API_KEY_ENV}")
    return key, path


def is_open_path(path: str) -> bool:
    """Health, readiness, metrics and docs need no key."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


async def _send_json(send: Callable, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class ApiKeyMiddleware:
    """Rejects requests to protected paths without the right bearer key (401) or with a body over the limit (413)."""

    def __init__(self, app: Any, key_provider: Callable[[], str] | None = None, max_body_bytes: int | None = None) -> None:
        self.app = app
        key = (key_provider or (lambda: resolve_api_key(create=True)[0]))()
        self.expected = f"Bearer {key}".encode("utf-8")
        if max_body_bytes is None:  # serving.yaml's max_body_bytes, read when the app is built (not on import)
            from serving.loading import load_serving_config

            max_body_bytes = load_serving_config().max_body_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            return await self.app(scope, receive, send)
        given = b""
        length = 0
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else 0
        if not hmac.compare_digest(given, self.expected):
            return await _send_json(send, 401, {"error": "Authorization: missing or wrong key, send "
                                                         "'Authorization: Bearer <key>'", "field": "Authorization"},
                                    [(b"www-authenticate", b"Bearer")])
        if length > self.max_body_bytes:
            return await _send_json(send, 413, {"error": f"body: {length} bytes, at most {self.max_body_bytes} allowed",
                                                "field": "body"})
        family = SINGLE_PREDICTION_ROUTES.get(scope["path"])
        if family is None:
            return await self.app(scope, receive, send)
        with IN_FLIGHT.track(family):  # serving.coalesce waits for accepted requests to join a flush
            return await self.app(scope, receive, send)


# single-item prediction routes and their family (their requests are coalesced, see serving.coalesce)
SINGLE_PREDICTION_ROUTES = {"/forecast_demand": "demand", "/predict_delay": "delay", "/score_risk": "risk"}


def explain_validation_body(body: dict[str, Any]) -> dict[str, Any]:
    """Turn BentoML's pydantic error body into one message that names every field (detail kept)."""
    detail = body.get("detail")
    if not isinstance(detail, list) or not detail:
        return body
    parts = []
    for err in detail:
        loc = [str(p) for p in err.get("loc", []) if p != "root"]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
    first = [str(p) for p in detail[0].get("loc", []) if p != "root"]
    return {"error": "; ".join(parts), "field": ".".join(first) or "body", "detail": detail}


class ValidationMessageMiddleware:
    """Rewrites 400 answers from request validation so that `error` names the fields (only 400s are buffered)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            return await self.app(scope, receive, send)
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def wrapped_send(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held["start"] = message
                return
            if "start" not in held:
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            raw = b"".join(chunks)
            try:
                data = json.dumps(explain_validation_body(json.loads(raw))).encode("utf-8")
            except (ValueError, AttributeError, TypeError):
                data = raw
            headers = [(k, v) for k, v in held["start"]["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(data)).encode()))
            await send({**held["start"], "headers": headers})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, wrapped_send)
