"""API keys for the HTTP service and the MCP server: who may read or write which namespaces of a store.

A key is shown once, when it is made (``editagent keys create --namespace alice``); the store keeps only its
SHA-256 (table ``api_keys`` in ``edits.sqlite3``, ``editagent_api_keys`` in PostgreSQL). A key is
``ea_<id>_<secret>``: the id is public (it names the key in ``keys list`` and ``keys revoke``), the secret is 256
random bits, so one unsalted hash suffices, and the hash is compared in constant time. Nothing here logs a key.

>>> ring = KeyRing("./memory/team")
>>> key, secret = ring.create(["alice"], read_only=True)
>>> ring.authenticate(secret).allows("alice", write=False)
True
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from editagent.memory.keystore import KeyStore, open_key_store
from editagent.schema import EditError, Namespace, check_namespace

logger = logging.getLogger(__name__)

Scope = Literal["read", "write"]
KEY_PREFIX = "ea"
MAX_KEY_NAMESPACES = 64
_KEY_PATTERN = re.compile(r"ea_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_ID_PATTERN = re.compile(r"[0-9a-f]{12}")


class ApiKey(BaseModel):
    """A key as the store describes it: never the key itself."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The key's public id (the part after 'ea_').")
    namespaces: list[Namespace] = Field(description="The namespaces the key may use.")
    scope: Scope = Field(description="'read' (list, search, ask, graph) or 'write' (also edit and forget).")
    label: str = Field("", description="A note saying whose key it is.")
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def holds(self, namespace: str) -> bool:
        return namespace in self.namespaces

    def allows(self, namespace: str, *, write: bool) -> bool:
        return not self.revoked and self.holds(namespace) and (self.scope == "write" or not write)

    def refusal(self, namespace: str, *, write: bool) -> str | None:
        """Why this key may not do it (a message naming the field), or None when it may."""
        if not self.holds(namespace):
            return f"namespace: this key does not hold {namespace!r}"
        if write and self.scope != "write":
            return "authorization: this key is read-only; writing needs a key made without --read-only"
        return None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _from_row(row: dict[str, Any]) -> ApiKey:
    return ApiKey(id=row["id"], namespaces=row["namespaces"], scope=row["scope"], label=row["label"],
                  created_at=row["created_at"], revoked_at=row["revoked_at"])


class KeyRing:
    """The API keys of one store: given as a folder or a ``postgresql://`` URL, it opens that store's key table
    alone (no edits, no embedder); given an open backend's ``keys``, it shares them (a second connection to the
    same store would only add a writer), and closing the ring leaves them open."""

    def __init__(self, store: str | Path | KeyStore) -> None:
        self._owned = isinstance(store, str | Path)
        self._keys: KeyStore = open_key_store(store) if isinstance(store, str | Path) else store
        self.location = self._keys.location

    def create(self, namespaces: Sequence[str], *, read_only: bool = False, label: str = "") -> tuple[ApiKey, str]:
        """Make a key for ``namespaces``; returns its record and the key, which is not stored and not shown again."""
        if isinstance(namespaces, str) or not namespaces:
            raise EditError("namespace: name at least one namespace for the key")
        if len(namespaces) > MAX_KEY_NAMESPACES:
            raise EditError(f"namespace: {len(namespaces)} namespaces, at most {MAX_KEY_NAMESPACES} per key")
        held = list(dict.fromkeys(check_namespace(namespace) for namespace in namespaces))
        if not isinstance(label, str) or len(label) > 200 or "\n" in label:
            raise EditError("label: one line of at most 200 characters")
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        self._keys.insert_key(key_id, hash_key(secret), held, "read" if read_only else "write", label)
        logger.info("created API key %s (%s) for %s", key_id, "read" if read_only else "write", ", ".join(held))
        return self.get(key_id), secret

    def get(self, key_id: str) -> ApiKey:
        rows = self._keys.key_rows(key_id) if isinstance(key_id, str) and _ID_PATTERN.fullmatch(key_id) else []
        if not rows:
            raise EditError(f"id: no API key {key_id!r} in this store; `editagent keys list` shows them")
        return _from_row(rows[0])

    def list(self) -> list[ApiKey]:
        return [_from_row(row) for row in self._keys.key_rows()]

    def revoke(self, key_id: str) -> ApiKey:
        key = self.get(key_id)
        if key.revoked or not self._keys.revoke_key(key_id):
            raise EditError(f"id: API key {key_id!r} is already revoked")
        logger.info("revoked API key %s", key_id)
        return self.get(key_id)

    def authenticate(self, secret: str | None) -> ApiKey | None:
        """The live key ``secret`` is, or None (malformed, unknown, wrong or revoked)."""
        match = _KEY_PATTERN.fullmatch(secret) if isinstance(secret, str) else None
        if match is None:
            return None
        rows = self._keys.key_rows(match.group(1))
        if not rows or not hmac.compare_digest(str(rows[0]["key_hash"]), hash_key(secret)):
            return None
        key = _from_row(rows[0])
        return None if key.revoked else key

    def close(self) -> None:
        if self._owned:
            self._keys.close()

    def __enter__(self) -> KeyRing:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
