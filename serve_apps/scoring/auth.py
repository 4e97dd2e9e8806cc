"""API keys: stored as SHA-256 digests only, checked in constant time.

A key reaches the endpoint as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, or
from a browser as the password of HTTP Basic auth (any user name; the review pages ask
for it).
Its SHA-256 digest is compared with *every* stored digest through
``hmac.compare_digest`` (no early exit), so neither the comparison nor the number of
keys tried reveals how close a guess came. Keys never appear in config, logs or memory
beyond the request: ``sluice serve hash-key`` prints the digest to store (it reads the
key from stdin or a hidden prompt, never from its command line; ``--new`` makes one).

Key file (``configs/api_keys``; the env var in ``api_keys.file_env`` overrides its
path): one key per line, ``<name> <sha256 hex>``; ``#`` starts a comment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.errors import ConfigError

__all__ = [
    "PUBLISHED_KEY_DIGESTS",
    "AuthMiddleware",
    "KeyRing",
    "hash_key",
    "is_loopback",
    "new_key",
    "parse_key_file",
    "refuse_published_keys",
    "route_path",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def hash_key(key: str) -> str:
    """The hex SHA-256 digest stored for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return "sk_" + secrets.token_urlsafe(32)


# Keys printed in this repository (README, `make demo`): anyone can read them, so they are
# accepted only by an endpoint that nobody else can reach.
PUBLISHED_KEY_DIGESTS = frozenset({hash_key("sluice-demo-key")})


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def refuse_published_keys(digests: Mapping[str, str], bind_host: str | None) -> None:
    """``ConfigError`` when an endpoint bound beyond loopback would accept a published key."""
    if is_loopback(bind_host):
        return
    published = sorted(
        name for name, d in digests.items()
        if _check_digest(d, f"api key {name!r}") in PUBLISHED_KEY_DIGESTS
    )  # fmt: skip
    if published:
        raise ConfigError(
            f"API key {', '.join(map(repr, published))} is the demo key published in the Sluice "
            f"repository, and the endpoint binds {bind_host!r}, which is not loopback: anyone "
            "could use it. Make a key with `sluice serve hash-key --new --name <client>`, put "
            "the line it prints in a key file outside the repository and point "
            "SLUICE_API_KEYS_FILE at it (or bind 127.0.0.1: serve.host in the platform config)"
        )


def _check_digest(digest: str, where: str) -> str:
    text = digest.strip().lower().removeprefix("sha256:")
    if not _HEX64.match(text):
        raise ConfigError(
            f"{where}: {digest!r} is not a SHA-256 hex digest (64 hex digits); store the "
            "output of `sluice serve hash-key`, never the key itself"
        )
    return text


def parse_key_file(path: Path) -> dict[str, str]:
    """name -> digest from a key file; errors name the file and the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"API key file {path}: cannot read it: {exc}") from exc
    keys: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}:{number}"
        if len(parts) != 2 or not _NAME.match(parts[0]):
            raise ConfigError(f"{where}: expected '<name> <sha256 hex>', got {line!r}")
        if parts[0] in keys:
            raise ConfigError(f"{where}: key name {parts[0]!r} appears twice")
        keys[parts[0]] = _check_digest(parts[1], where)
    return keys


@dataclass(frozen=True)
class KeyRing:
    """The accepted keys as name -> SHA-256 digest (bytes compared in constant time)."""

    digests: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_digests(cls, named: Mapping[str, str] | Iterable[str]) -> KeyRing:
        items = named.items() if isinstance(named, Mapping) else (
            (f"key{i}", d) for i, d in enumerate(named)
        )  # fmt: skip
        digests = tuple(
            (name, bytes.fromhex(_check_digest(d, f"api key {name!r}"))) for name, d in items
        )
        if not digests:
            raise ConfigError(
                "no API keys configured: every request would be refused; add a digest to "
                "api_keys.sha256 or a key file (`sluice serve hash-key` makes one)"
            )
        return cls(digests)

    def __len__(self) -> int:
        return len(self.digests)

    def check(self, presented: str | None) -> str | None:
        """The name of the matching key, or None. Every stored digest is compared."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for name, stored in self.digests:
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        return found


def presented_key(headers: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of a request: ``Authorization: Bearer <key>``, ``X-API-Key: <key>``, or the
    password of ``Authorization: Basic``."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        lname = name.lower()
        if lname == b"x-api-key":
            return value.decode("latin-1").strip() or None
        if lname == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            if scheme.lower() == "basic" and token.strip():
                try:
                    pair = base64.b64decode(token.strip(), validate=True).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    return None
                return pair.partition(":")[2] or None
    return None


_UNAUTHORIZED = json.dumps({
    "error": "unauthorized",
    "message": "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
}).encode()  # fmt: skip


def route_path(scope: dict[str, Any]) -> str:
    """A request's path below the Serve route prefix the app is mounted at (``root_path``)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class AuthMiddleware:
    """ASGI middleware: 401 for every HTTP path but the public ones when the key is wrong.

    A middleware (not a route dependency) so that every path is covered, the OpenAPI
    pages and unknown paths included: without a key nobody learns which routes exist.
    """

    def __init__(self, app: Any, keyring: KeyRing, public_paths: Iterable[str],
                 browser_prefix: str | None = None) -> None:  # fmt: skip
        self.app = app
        self.keyring = keyring
        self.public = frozenset(public_paths)
        self.browser_prefix = browser_prefix  # pages a browser opens: ask for Basic auth

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path in self.public:
            await self.app(scope, receive, send)
            return
        name = self.keyring.check(presented_key(scope.get("headers", ())))
        if name is None:
            browser = self.browser_prefix is not None and path.startswith(self.browser_prefix)
            challenge = b'Basic realm="sluice", charset="UTF-8"' if browser \
                else b'Bearer realm="sluice"'  # fmt: skip
            await send({
                "type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"www-authenticate", challenge),
                            (b"content-length", str(len(_UNAUTHORIZED)).encode())],
            })  # fmt: skip
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        scope.setdefault("state", {})["api_key_name"] = name
        await self.app(scope, receive, send)
