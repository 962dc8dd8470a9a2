"""The trust store: roles, dedupe, revocation, and its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol import (
    PrivateKey,
    Role,
    SignatureError,
    TrustStore,
    TrustStoreError,
    UntrustedKeyError,
)

VENDOR = PrivateKey.from_seed(b"\x01" * 32)
VERIFIER = PrivateKey.from_seed(b"\x02" * 32)
STRANGER = PrivateKey.from_seed(b"\x03" * 32)


def make_store() -> TrustStore:
    store = TrustStore()
    store.add(VENDOR.public_key, Role.VENDOR, name="Acme")
    store.add(VERIFIER.public_key, "verifier")
    return store


def test_require_by_role() -> None:
    store = make_store()
    assert store.require(VENDOR.key_id, Role.VENDOR) == VENDOR.public_key
    assert store.require(VERIFIER.key_id, "verifier") == VERIFIER.public_key
    with pytest.raises(UntrustedKeyError, match="not in the trust store"):
        store.require(STRANGER.key_id, Role.VENDOR)
    with pytest.raises(UntrustedKeyError, match=r"Acme\) is trusted as vendor, not as owner"):
        store.require(VENDOR.key_id, Role.OWNER)


def test_same_key_twice_is_one_entry() -> None:
    store = make_store()
    store.add(VENDOR.public_key, Role.VENDOR)
    assert len(store) == 2
    store.add(VENDOR.public_key, Role.REGISTRY)
    assert len(store) == 2
    entry = store.get(VENDOR.key_id)
    assert entry is not None and entry.roles == {Role.VENDOR, Role.REGISTRY} and entry.name == "Acme"
    store.add(VERIFIER.public_key, Role.OWNER, name="late name")
    assert store.get(VERIFIER.key_id).name == "late name"  # type: ignore[union-attr]
    with pytest.raises(TrustStoreError, match="already listed as 'Acme'"):
        store.add(VENDOR.public_key, Role.OWNER, name="Someone else")


def test_revoke() -> None:
    store = make_store()
    store.revoke(VENDOR.key_id)
    assert VENDOR.key_id in store
    with pytest.raises(UntrustedKeyError, match="revoked"):
        store.require(VENDOR.key_id, Role.VENDOR)
    with pytest.raises(TrustStoreError, match="revoked"):
        store.add(VENDOR.public_key, Role.VENDOR)
    with pytest.raises(TrustStoreError):
        store.revoke(STRANGER.key_id)


def test_remove() -> None:
    store = make_store()
    store.add(VENDOR.public_key, Role.OWNER)
    store.remove(VENDOR.key_id, Role.OWNER)
    assert store.require(VENDOR.key_id, Role.VENDOR)
    with pytest.raises(UntrustedKeyError):
        store.require(VENDOR.key_id, Role.OWNER)
    with pytest.raises(TrustStoreError, match="does not have the role"):
        store.remove(VENDOR.key_id, Role.OWNER)
    store.remove(VENDOR.key_id, Role.VENDOR)  # last role: the key goes
    assert VENDOR.key_id not in store
    store.remove(VERIFIER.key_id)
    assert len(store) == 0
    with pytest.raises(TrustStoreError):
        store.remove(VERIFIER.key_id)


def test_unknown_role() -> None:
    with pytest.raises(TrustStoreError, match="unknown role"):
        make_store().add(STRANGER.public_key, "admin")
    with pytest.raises(TrustStoreError, match="unknown role"):
        make_store().require(VENDOR.key_id, "admin")


def test_verify_needs_both_trust_and_a_good_signature() -> None:
    store = make_store()
    sig = VENDOR.sign("registry-entry", b"entry")
    assert store.verify(VENDOR.key_id, Role.VENDOR, "registry-entry", b"entry", sig) == VENDOR.public_key
    with pytest.raises(SignatureError):
        store.verify(VENDOR.key_id, Role.VENDOR, "registry-entry", b"other", sig)
    with pytest.raises(UntrustedKeyError):
        store.verify(VENDOR.key_id, Role.VERIFIER, "registry-entry", b"entry", sig)
    stranger_sig = STRANGER.sign("registry-entry", b"entry")
    with pytest.raises(UntrustedKeyError):
        store.verify(STRANGER.key_id, Role.VENDOR, "registry-entry", b"entry", stranger_sig)


# -- files ------------------------------------------------------------------------------------------------


def test_save_and_load(tmp_path: Path) -> None:
    store = make_store()
    store.add(STRANGER.public_key, Role.OWNER)
    store.revoke(STRANGER.key_id)
    path = tmp_path / "trust.json"
    store.save(path)
    loaded = TrustStore.load(path)
    assert list(loaded) == list(store)
    assert loaded.to_json() == store.to_json() == path.read_bytes()
    document = json.loads(path.read_bytes())
    assert document["format"] == "pawprint/trust-store/v1"
    assert [k["key_id"] for k in document["keys"]] == sorted(k["key_id"] for k in document["keys"])
    assert [p.name for p in tmp_path.iterdir()] == ["trust.json"]


def entry_json(key: PrivateKey, roles: list[str], **extra: object) -> dict[str, object]:
    return {"key_id": key.key_id, "public_key": key.public_key.raw.hex(), "roles": roles, **extra}


def store_json(*entries: dict[str, object]) -> bytes:
    return json.dumps({"format": "pawprint/trust-store/v1", "keys": list(entries)}).encode()


def test_a_key_listed_twice_in_the_file_is_merged() -> None:
    store = TrustStore.from_json(
        store_json(
            entry_json(VENDOR, ["vendor"], name="Acme"),
            entry_json(VENDOR, ["registry", "vendor"]),
            entry_json(VERIFIER, ["verifier"]),
            entry_json(VERIFIER, ["verifier"], revoked=True),  # revoked in either listing: revoked
        )
    )
    assert len(store) == 2
    vendor = store.get(VENDOR.key_id)
    assert vendor is not None and vendor.roles == {Role.VENDOR, Role.REGISTRY} and vendor.name == "Acme"
    with pytest.raises(UntrustedKeyError, match="revoked"):
        store.require(VERIFIER.key_id, Role.VERIFIER)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "exactly the fields"),
        (json.dumps({"format": "other", "keys": []}).encode(), "unsupported"),
        (store_json(entry_json(VENDOR, ["vendor"], colour="blue")), "fields"),
        (store_json(entry_json(VENDOR, [])), "non-empty"),
        (store_json(entry_json(VENDOR, ["admin"])), "unknown role"),
        (store_json(entry_json(VENDOR, ["vendor"], revoked="no")), "revoked"),
        (store_json(entry_json(VENDOR, ["vendor"], name=3)), "name"),
        (store_json({**entry_json(VENDOR, ["vendor"]), "key_id": STRANGER.key_id}), "does not match"),
        (store_json({**entry_json(VENDOR, ["vendor"]), "public_key": "zz"}), "public_key"),
        (
            store_json(entry_json(VENDOR, ["vendor"], name="A"), entry_json(VENDOR, ["owner"], name="B")),
            "listed",
        ),
        (b'{"format": "pawprint/trust-store/v1", "format": "x", "keys": []}', "duplicate field"),
        (b'{"format": "pawprint/trust-store/v1", "keys": [NaN]}', "NaN"),
    ],
)
def test_malformed_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(TrustStoreError, match=message):
        TrustStore.from_json(data)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError, match="cannot read"):
        TrustStore.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[]")
    with pytest.raises(TrustStoreError, match=r"bad\.json"):
        TrustStore.load(bad)
