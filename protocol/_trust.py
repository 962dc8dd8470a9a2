"""The trust store: which public keys are trusted, for which roles.

A store is a JSON file (human-readable, because operators review and diff it by hand; it is never signed,
so it does not need the canonical encoding)::

    {
      "format": "pawprint/trust-store/v1",
      "keys": [
        {"key_id": "<64 hex>", "public_key": "<64 hex, raw Ed25519>", "roles": ["vendor"],
         "name": "Acme base models", "revoked": false}
      ]
    }

``name`` and ``revoked`` may be omitted when reading. Keys are written sorted by key id. A key listed twice
is one entry (roles merged), whether in the file or through ``add``. Revocation is kept in the store rather
than deleting the key: a revoked key stays refused even if someone later adds it again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from protocol._errors import FormatError, TrustStoreError, UntrustedKeyError
from protocol._files import atomic_write
from protocol._json import JsonError, loads_strict
from protocol._keys import PublicKey, verify

FORMAT = "pawprint/trust-store/v1"

_ENTRY_FIELDS = frozenset({"key_id", "public_key", "roles", "name", "revoked"})
_REQUIRED_FIELDS = frozenset({"key_id", "public_key", "roles"})


class Role(StrEnum):
    """What a key is trusted to sign."""

    OWNER = "owner"  # manifests and bundles of a model
    VENDOR = "vendor"  # registry entries for base models
    VERIFIER = "verifier"  # challenges, receipts, comparison reports
    REGISTRY = "registry"  # log checkpoints; admitting vendors
    AUDITOR = "auditor"  # audit findings (pawprint audit recompute): trusted to have recomputed from weights
    WITNESS = "witness"  # cosignatures of log checkpoints (C2SP tlog-cosignature): seen consistent by a witness


@dataclass(frozen=True)
class TrustedKey:
    """One entry of the trust store."""

    public_key: PublicKey
    roles: frozenset[Role]
    name: str | None = None
    revoked: bool = False

    def __post_init__(self) -> None:
        if self.name is not None:
            try:
                self.name.encode("utf-8")
            except UnicodeEncodeError:
                raise TrustStoreError("a key's name must be UTF-8 text (it holds a lone surrogate)") from None

    @property
    def key_id(self) -> str:
        return self.public_key.key_id


class TrustStore:
    """A mutable set of trusted keys, indexed by key id. ``load``/``save`` move it to and from a file."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self._keys: dict[str, TrustedKey] = {}
        for key in keys:
            self._merge(key, adding=False)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(sorted(self._keys.values(), key=lambda k: k.key_id))

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def get(self, key_id: str) -> TrustedKey | None:
        return self._keys.get(key_id)

    def add(self, public_key: PublicKey, role: Role | str, *, name: str | None = None) -> TrustedKey:
        """Trust ``public_key`` for ``role``; a key already listed gains the role (and the name if it had
        none). Refuses to re-add a revoked key or to rename a key silently."""
        return self._merge(TrustedKey(public_key, frozenset({_role(role)}), name), adding=True)

    def remove(self, key_id: str, role: Role | str | None = None) -> None:
        """Forget a key (or one of its roles; a key left with no role is forgotten)."""
        entry = self._entry(key_id)
        if role is None:
            del self._keys[key_id]
            return
        wanted = _role(role)
        if wanted not in entry.roles:
            raise TrustStoreError(f"key {key_id} does not have the role {wanted}")
        if entry.roles == {wanted}:
            del self._keys[key_id]
        else:
            self._keys[key_id] = replace(entry, roles=entry.roles - {wanted})

    def revoke(self, key_id: str) -> None:
        """Mark a key revoked: it stays listed so that nothing can trust it again by re-adding it."""
        self._keys[key_id] = replace(self._entry(key_id), revoked=True)

    def trusted_for(self, role: Role | str) -> list[PublicKey]:
        """The keys trusted for ``role`` (revoked keys left out), by key id."""
        wanted = _role(role)
        return [entry.public_key for entry in self if wanted in entry.roles and not entry.revoked]

    def require(self, key_id: str, role: Role | str) -> PublicKey:
        """The public key for ``key_id`` if it is trusted for ``role``; ``UntrustedKeyError`` otherwise."""
        wanted = _role(role)
        entry = self._keys.get(key_id)
        if entry is None:
            raise UntrustedKeyError(f"key {key_id!r:.80} is not in the trust store")
        if entry.revoked:
            raise UntrustedKeyError(f"key {key_id} ({entry.name or 'unnamed'}) has been revoked")
        if wanted not in entry.roles:
            held = ", ".join(sorted(entry.roles))
            raise UntrustedKeyError(f"key {key_id} ({entry.name or 'unnamed'}) is trusted as {held}, not as {wanted}")
        return entry.public_key

    def verify(self, key_id: str, role: Role | str, kind: str, payload: bytes, signature: bytes) -> PublicKey:
        """``require`` then ``verify``: the signature must be good *and* come from a key trusted for
        ``role``. Returns the key."""
        public_key = self.require(key_id, role)
        verify(public_key, kind, payload, signature)
        return public_key

    # -- files ------------------------------------------------------------------------------------------

    def to_json(self) -> bytes:
        keys = [
            {
                "key_id": entry.key_id,
                "public_key": entry.public_key.raw.hex(),
                "roles": sorted(entry.roles),
                "name": entry.name,
                "revoked": entry.revoked,
            }
            for entry in self
        ]
        return (json.dumps({"format": FORMAT, "keys": keys}, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> TrustStore:
        try:
            document = loads_strict(data)
        except JsonError as e:
            raise TrustStoreError(f"trust store is not valid JSON: {e}") from e
        if not isinstance(document, dict) or set(document) != {"format", "keys"}:
            raise TrustStoreError('a trust store is an object with exactly the fields "format" and "keys"')
        if document["format"] != FORMAT:
            found = document["format"]
            raise TrustStoreError(f"unsupported trust store format {found!r:.80}; expected {FORMAT}")
        if not isinstance(document["keys"], list):
            raise TrustStoreError('"keys" must be a list')
        return cls([_parse_entry(i, item) for i, item in enumerate(document["keys"])])

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write(path, self.to_json(), mode=0o644)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrustStore:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise TrustStoreError(f"cannot read trust store {path}: {e.strerror or e}") from e
        try:
            return cls.from_json(data)
        except TrustStoreError as e:
            raise TrustStoreError(f"{path}: {e}") from e

    # -- internals --------------------------------------------------------------------------------------

    def _entry(self, key_id: str) -> TrustedKey:
        entry = self._keys.get(key_id)
        if entry is None:
            raise TrustStoreError(f"key {key_id!r:.80} is not in the trust store")
        return entry

    def _merge(self, new: TrustedKey, *, adding: bool) -> TrustedKey:
        """Fold ``new`` into the entry for its key id. When loading, a key listed twice is revoked if either
        listing says so; when adding, trusting a revoked key again is refused outright."""
        old = self._keys.get(new.key_id)
        if old is None:
            merged = new
        else:
            if adding and old.revoked:
                raise TrustStoreError(f"key {new.key_id} has been revoked; it cannot be trusted again")
            if old.name is not None and new.name is not None and old.name != new.name:
                raise TrustStoreError(
                    f"key {new.key_id} is already listed as {old.name!r}, not {new.name!r}; remove it first"
                )
            merged = TrustedKey(old.public_key, old.roles | new.roles, old.name or new.name, old.revoked or new.revoked)
        self._keys[merged.key_id] = merged
        return merged


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise TrustStoreError(f"unknown role {role!r:.40}; known: {known}") from None


def _parse_entry(index: int, item: Any) -> TrustedKey:
    where = f"keys[{index}]"
    if not isinstance(item, dict):
        raise TrustStoreError(f"{where} must be an object")
    fields = set(item)
    if not fields >= _REQUIRED_FIELDS or not fields <= _ENTRY_FIELDS:
        raise TrustStoreError(
            f"{where} must have the fields {sorted(_REQUIRED_FIELDS)} and may have name, revoked; got {sorted(fields)}"
        )
    try:
        public_key = PublicKey.from_hex(item["public_key"])
    except FormatError as e:
        raise TrustStoreError(f"{where}.public_key: {e}") from e
    if item["key_id"] != public_key.key_id:
        raise TrustStoreError(f"{where}.key_id does not match its public key (expected {public_key.key_id})")
    roles = item["roles"]
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise TrustStoreError(f"{where}.roles must be a non-empty list of role names")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise TrustStoreError(f"{where}.name must be a string or null")
    revoked = item.get("revoked", False)
    if not isinstance(revoked, bool):
        raise TrustStoreError(f"{where}.revoked must be true or false")
    try:
        return TrustedKey(public_key, frozenset(_role(r) for r in roles), name, revoked)
    except TrustStoreError as e:
        raise TrustStoreError(f"{where}.roles: {e}") from e

