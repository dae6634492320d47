"""Who may call a service: an API key from an env var or a file, checked in constant time.

``/healthz`` is always open (load balancers and Kubernetes probes carry no key). ``/predict``
needs the key whenever one is set; the documentation (``/docs``, ``/openapi.json``, their
assets) and the page at ``/`` need it too unless ``serve.docs_auth`` is false. The key goes as
``Authorization: Bearer KEY``, or as the password of HTTP Basic auth, which is what a browser
prompts for when it opens ``/docs`` (any user name).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse

from rayline.errors import ServeError
from rayline.spec import ServeSpec

# Probes carry no key: Kubernetes' and the Open Inference Protocol's health checks.
OPEN_PATHS = frozenset({"/healthz", "/v2/health/live", "/v2/health/ready"})
# Answers of the model need the key whatever serve.docs_auth says (the protocol's model routes too).
API_PATHS = ("/predict", "/explain", "/v2/models")


@dataclass(frozen=True)
class Access:
    """Where the key comes from, and whether the documentation needs it too."""

    api_key_env: str | None = None
    api_key_file: str | None = None
    docs_auth: bool = True

    @classmethod
    def of(cls, serve: ServeSpec) -> Access:
        """The spec's settings; a key file's path made absolute here (replicas run in other folders)."""
        key_file = serve.api_key_file and str(Path(serve.api_key_file).expanduser().resolve())
        return cls(serve.api_key_env, key_file, serve.docs_auth)

    def key(self) -> str | None:
        """The key, or None when no key is configured. A configured key that is missing or empty
        is an error: a service must never start open because a variable was not exported."""
        if self.api_key_file:
            path = Path(self.api_key_file).expanduser()
            try:
                value = path.read_text().strip()
            except OSError as err:
                raise ServeError(f"serve.api_key_file {path}: {err.strerror}") from None
            if not value:
                raise ServeError(f"serve.api_key_file {path} is empty")
            return value
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise ServeError(
                    f"serve.api_key_env names {self.api_key_env}, which is not set or empty",
                    hint=f"export {self.api_key_env}=... before `rayline serve`",
                )
            return value
        return None


def presented_key(headers: Any) -> bytes | None:
    """The key a request carries: a Bearer token, or a Basic password. Bytes: headers may hold
    any octets, and ``compare_digest`` refuses non-ASCII text."""
    for name, value in headers:
        if name != b"authorization":
            continue
        scheme, _, rest = value.partition(b" ")
        if scheme.lower() == b"bearer":
            return bytes(rest.strip())
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(rest.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            return decoded.partition(b":")[2]
    return None


class ApiKeyGuard:
    """Pure ASGI middleware (no task per request): 401 with a JSON body before the app runs."""

    def __init__(self, app: Any, key: str, docs_auth: bool) -> None:
        self.app, self.key, self.docs_auth = app, key.encode(), docs_auth

    def _guarded(self, path: str) -> bool:
        if path in OPEN_PATHS:
            return False
        return self.docs_auth or path.startswith(API_PATHS)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._guarded(scope["path"]):
            given = presented_key(scope.get("headers", ()))
            if given is None or not hmac.compare_digest(given, self.key):
                api = scope["path"].startswith(API_PATHS)
                # A browser asks for a password on Basic; an API client is told the scheme it uses.
                challenge = 'Bearer realm="rayline"' if api else 'Basic realm="rayline"'
                response = JSONResponse(
                    {"error": "missing or wrong API key (Authorization: Bearer KEY)"},
                    status_code=401,
                    headers={"WWW-Authenticate": challenge},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
