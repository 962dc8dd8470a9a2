"""Trust stores distributed with TUF (issue 17 item 5): ``pawprint trust-repo`` writes a TUF repository,
``pawprint keys refresh`` fetches the trust store from it through python-tuf's ngclient, over a real local HTTP
server (``http.server`` on 127.0.0.1 in a thread). Each attack is played by someone who controls the server (or
holds fewer keys than the thresholds) and must fail: exit 1, and the local trust store left as it was."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# python-tuf comes with the signing extra, which `make install` installs: a missing one is an error, not a skip.
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp

from pawprint._tuf import TARGET_NAME, TrustRepository, serve_trust_repo, signer, tuf_key
from pawprint.cli import main
from protocol import PrivateKey, PublicKey, Role, TrustStore

KEY_NAMES = ("root1", "root2", "root3", "targets", "snapshot", "timestamp", "verifier", "log", "vendor", "witness",
             "newroot1", "newroot2", "attacker")


@dataclass
class Setup:
    tmp: Path
    keys: dict[str, Path]  # name -> private key file; NAME.pub beside it
    repo: Path
    store: Path  # the publisher's trust store
    client: Path  # the client's trust store

    def pub(self, name: str) -> Path:
        return self.keys[name].with_suffix(".pub")

    def key(self, name: str) -> PrivateKey:
        return PrivateKey.load(self.keys[name])


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def online(s: Setup) -> list[str | Path]:
    return ["--targets-key", s.keys["targets"], "--snapshot-key", s.keys["snapshot"],
            "--timestamp-key", s.keys["timestamp"]]


def init(s: Setup, capsys: pytest.CaptureFixture[str], *extra: str | Path) -> None:
    code, _, err = run(capsys, "trust-repo", "init", s.repo, "--store", s.store, "--root-key", s.keys["root1"],
                       "--root-key", s.keys["root2"], "--root-pub", s.pub("root3"), "--root-threshold", "2",
                       *online(s), *extra)
    assert code == 0, err


def refresh(s: Setup, capsys: pytest.CaptureFixture[str], url: str, *extra: str | Path) -> tuple[int, str, str]:
    return run(capsys, "keys", "refresh", "--tuf-url", url, "--store", s.client, "--json", *extra)


def first_refresh(s: Setup, capsys: pytest.CaptureFixture[str], url: str) -> dict[str, object]:
    code, out, err = refresh(s, capsys, url, "--tuf-root", s.repo / "metadata" / "1.root.json")
    assert code == 0, err
    doc: dict[str, object] = json.loads(out)
    return doc


def keys_of(path: Path) -> dict[str, tuple[list[str], bool]]:
    return {e.key_id: (sorted(e.roles), e.revoked) for e in TrustStore.load(path)}


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    keys: dict[str, Path] = {}
    for name in KEY_NAMES:
        key = PrivateKey.generate()
        keys[name] = tmp_path / "keys" / f"{name}.key"
        keys[name].parent.mkdir(exist_ok=True)
        key.save(keys[name])
        key.public_key.save(keys[name].with_suffix(".pub"))
    store = TrustStore()
    for name, role in (("verifier", Role.VERIFIER), ("log", Role.REGISTRY), ("vendor", Role.VENDOR),
                       ("witness", Role.WITNESS)):
        store.add(PrivateKey.load(keys[name]).public_key, role, name=name)
    store.save(tmp_path / "published.json")
    return Setup(tmp_path, keys, tmp_path / "repo", tmp_path / "published.json", tmp_path / "client" / "trust.json")


@pytest.fixture()
def served(setup: Setup, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Setup, str]]:
    init(setup, capsys)
    setup.client.parent.mkdir()
    with serve_trust_repo(setup.repo) as url:
        yield setup, url


# ---------------------------------------------------------------------------------------------- honest
def test_honest_refresh_fetches_verifies_and_writes_the_store(served: tuple[Setup, str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    s, url = served
    doc = first_refresh(s, capsys, url)
    assert doc["root_version"] == 1 and doc["targets_version"] == 1 and doc["keys"] == 4
    assert s.client.read_bytes() == s.store.read_bytes()
    store = TrustStore.load(s.client)
    assert store.require(s.key("log").key_id, Role.REGISTRY) == s.key("log").public_key
    assert store.require(s.key("witness").key_id, Role.WITNESS) == s.key("witness").public_key

    # The publisher adds a key; the client, anchored by its cache now, gets it.
    published = TrustStore.load(s.store)
    auditor = PrivateKey.generate().public_key
    published.add(auditor, Role.AUDITOR, name="auditor")
    published.save(s.store)
    assert run(capsys, "trust-repo", "publish", s.repo, "--store", s.store, *online(s))[0] == 0
    code, out, err = refresh(s, capsys, url)
    assert code == 0, err
    assert json.loads(out)["targets_version"] == 2
    assert TrustStore.load(s.client).require(auditor.key_id, Role.AUDITOR) == auditor

    # A refresh with nothing new is fine and changes nothing.
    before = s.client.read_bytes()
    assert refresh(s, capsys, url)[0] == 0 and s.client.read_bytes() == before


def test_local_revocations_survive_a_refresh(served: tuple[Setup, str], capsys: pytest.CaptureFixture[str]) -> None:
    s, url = served
    first_refresh(s, capsys, url)
    vendor = s.key("vendor").key_id
    local = TrustStore.load(s.client)
    local.revoke(vendor)
    local.save(s.client)
    code, out, err = refresh(s, capsys, url)
    assert code == 0, err
    assert json.loads(out)["kept_revocations"] == [vendor]
    assert keys_of(s.client)[vendor] == (["vendor"], True)
    with pytest.raises(Exception, match="revoked"):
        TrustStore.load(s.client).require(vendor, Role.VENDOR)


def test_the_repository_is_deterministic_given_keys_store_and_time(setup: Setup,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    init(setup, capsys, "--now", "2026-01-01T00:00:00Z")
    first = {p.relative_to(setup.repo): p.read_bytes() for p in setup.repo.rglob("*") if p.is_file()}
    shutil.rmtree(setup.repo)
    init(setup, capsys, "--now", "2026-01-01T00:00:00Z")
    second = {p.relative_to(setup.repo): p.read_bytes() for p in setup.repo.rglob("*") if p.is_file()}
    assert first == second and len(first) == 5
    timestamp = json.loads((setup.repo / "metadata" / "timestamp.json").read_bytes())
    assert timestamp["signed"]["expires"] == "2026-01-02T00:00:00Z"


def test_the_tuf_role_keys_are_pawprint_key_files(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """``keys generate --role tuf-root`` writes a key the repository signs with (securesystemslib's CryptoSigner
    over the same Ed25519 key); its TUF key is the same public key."""
    code, out, err = run(capsys, "keys", "generate", "-o", setup.tmp / "k", "--name", "r", "--role", "tuf-root",
                         "--json")
    assert code == 0, err
    key = PrivateKey.load(json.loads(out)["private_key"])
    assert tuf_key(key.public_key).keyval["public"] == key.public_key.raw.hex()
    assert signer(key).public_key == tuf_key(key.public_key)


# ------------------------------------------------------------------------------------------- rotation
def test_root_rotation_is_followed_and_the_old_keys_lose_their_power(served: tuple[Setup, str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    s, url = served
    first_refresh(s, capsys, url)
    # root v2: new keys (newroot1, newroot2, root3), threshold 2; signed by 2 old and 2 new keys.
    code, _, err = run(capsys, "trust-repo", "rotate-root", s.repo, "--root-key", s.keys["root1"], "--root-key",
                       s.keys["root2"], "--new-root-key", s.keys["newroot1"], "--new-root-key", s.keys["newroot2"],
                       "--new-root-pub", s.pub("root3"), "--root-threshold", "2")
    assert code == 0, err
    code, out, err = refresh(s, capsys, url)
    assert code == 0, err
    assert json.loads(out)["root_version"] == 2
    # A new client bootstrapped from 1.root.json follows the chain too.
    code, out, err = run(capsys, "keys", "refresh", "--tuf-url", url, "--store", s.tmp / "other.json", "--tuf-root",
                         s.repo / "metadata" / "1.root.json", "--json")
    assert code == 0 and json.loads(out)["root_version"] == 2, err

    # The rotated-out keys root1 + root2 (a threshold of version 1) try to sign version 3: refused.
    forged = Metadata[Root].from_file(str(s.repo / "metadata" / "2.root.json"))
    forged.signed.version = 3
    forged.signed.add_key(tuf_key(s.key("attacker").public_key), "targets")
    forged.signatures.clear()
    for name in ("root1", "root2"):
        forged.sign(signer(s.key(name)), append=True)
    forged.to_file(str(s.repo / "metadata" / "3.root.json"))
    before = s.client.read_bytes()
    code, _, err = refresh(s, capsys, url)
    assert code == 1 and "threshold not met" in err, err
    assert s.client.read_bytes() == before


def test_rotating_a_stolen_online_key_shuts_it_out(served: tuple[Setup, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The timestamp key leaks. The root key holders rotate the online keys (root v2 names new targets, snapshot
    and timestamp keys; the store is re-published under them); the thief's re-signed timestamp is refused."""
    s, url = served
    first_refresh(s, capsys, url)
    stolen = (s.repo / "metadata" / "timestamp.json").read_bytes()
    new_online = {}
    for role in ("targets", "snapshot", "timestamp"):
        key = PrivateKey.generate()
        new_online[role] = s.tmp / "keys" / f"new-{role}.key"
        key.save(new_online[role])
    code, out, err = run(capsys, "trust-repo", "rotate-root", s.repo, "--root-key", s.keys["root1"], "--root-key",
                         s.keys["root2"], "--new-root-key", s.keys["root1"], "--new-root-key", s.keys["root2"],
                         "--new-root-pub", s.pub("root3"), "--root-threshold", "2",
                         *[x for role, path in new_online.items() for x in (f"--{role}-key", path)], "--json")
    assert code == 0, err
    assert json.loads(out)["root_version"] == 2 and json.loads(out)["timestamp_version"] == 2
    code, out, err = refresh(s, capsys, url)
    assert code == 0 and json.loads(out)["root_version"] == 2, err
    # The old online keys can no longer publish: the repository tool refuses them ...
    code, _, err = run(capsys, "trust-repo", "publish", s.repo, "--store", s.store, *online(s))
    assert code == 2 and "is not a targets key of root version 2" in err, err
    # ... and the thief's timestamp (version 3, signed with the old key) does not verify for the client.
    forged = Metadata[Timestamp].from_bytes(stolen)
    forged.signed.version = 3
    forged.signed.snapshot_meta = MetaFile(version=2)
    forged.sign(signer(s.key("timestamp")))
    forged.to_file(str(s.repo / "metadata" / "timestamp.json"))
    before = s.client.read_bytes()
    code, _, err = refresh(s, capsys, url)
    assert code == 1 and "threshold not met" in err, err
    assert s.client.read_bytes() == before


def test_the_repository_tool_refuses_a_rotation_below_the_old_threshold(served: tuple[Setup, str],
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    s, _ = served
    code, _, err = run(capsys, "trust-repo", "rotate-root", s.repo, "--root-key", s.keys["root1"],
                       "--new-root-key", s.keys["attacker"], "--root-threshold", "1")
    assert code == 2 and "root needs 2 of its 3 keys" in err, err
    assert not (s.repo / "metadata" / "2.root.json").exists()


# -------------------------------------------------------------------------------------------- attacks
def test_a_root_signed_by_too_few_root_keys_is_refused(served: tuple[Setup, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An attacker who stole one of the three root keys (threshold 2) publishes root v2 making their own key
    the targets key, signed by the stolen key and their own."""
    s, url = served
    first_refresh(s, capsys, url)
    before = s.client.read_bytes()
    forged = Metadata[Root].from_file(str(s.repo / "metadata" / "1.root.json"))
    forged.signed.version = 2
    for keyid in list(forged.signed.roles["targets"].keyids):
        forged.signed.revoke_key(keyid, "targets")
    forged.signed.add_key(tuf_key(s.key("attacker").public_key), "targets")
    forged.signed.add_key(tuf_key(s.key("attacker").public_key), "root")
    forged.signatures.clear()
    forged.sign(signer(s.key("root1")), append=True)
    forged.sign(signer(s.key("attacker")), append=True)
    forged.to_file(str(s.repo / "metadata" / "2.root.json"))
    code, out, err = refresh(s, capsys, url)
    assert code == 1 and "threshold not met" in err, err
    assert json.loads(out)["error"]["kind"] == "UnsignedMetadataError"
    assert s.client.read_bytes() == before


def test_targets_signed_by_a_key_that_is_not_the_targets_key_are_refused(served: tuple[Setup, str],
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The server's operator (holding the snapshot and timestamp keys, not the targets key) lists their own
    trust store: new targets metadata signed by their own key, snapshot and timestamp re-signed properly."""
    s, url = served
    first_refresh(s, capsys, url)
    before = s.client.read_bytes()
    evil = TrustStore.load(s.store)
    evil.add(s.key("attacker").public_key, Role.VERIFIER, name="evil verifier")
    repo = TrustRepository(s.repo)
    with pytest.raises(Exception, match="not a targets key"):  # the tool will not do it...
        repo.publish(evil, targets_key=s.key("attacker"), snapshot_key=s.key("snapshot"),
                     timestamp_key=s.key("timestamp"), now=datetime.now(UTC))
    # ... so the attacker signs by hand, with the real snapshot and timestamp keys.
    data = evil.to_json()
    target = TargetFile.from_data(TARGET_NAME, data, ["sha256"])
    (s.repo / "targets" / f"{target.hashes['sha256']}.{TARGET_NAME}").write_bytes(data)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    targets = Metadata(Targets(version=2, expires=expires, targets={TARGET_NAME: target}))
    targets.sign(signer(s.key("attacker")))
    targets.to_file(str(s.repo / "metadata" / "2.targets.json"))
    snapshot = Metadata(Snapshot(version=2, expires=expires, meta={"targets.json": MetaFile(version=2)}))
    snapshot.sign(signer(s.key("snapshot")))
    snapshot.to_file(str(s.repo / "metadata" / "2.snapshot.json"))
    timestamp = Metadata(Timestamp(version=2, expires=expires, snapshot_meta=MetaFile(version=2)))
    timestamp.sign(signer(s.key("timestamp")))
    timestamp.to_file(str(s.repo / "metadata" / "timestamp.json"))
    code, _, err = refresh(s, capsys, url)
    assert code == 1 and "threshold not met" in err, err
    assert s.client.read_bytes() == before


def test_a_trust_store_tampered_on_the_server_is_refused(served: tuple[Setup, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    s, url = served
    (target,) = (s.repo / "targets").iterdir()
    evil = TrustStore.load(target)
    evil.add(s.key("attacker").public_key, Role.VERIFIER, name="evil")
    target.write_bytes(evil.to_json())  # longer than signed
    code, out, err = first_refresh_raw(s, capsys, url)
    assert code == 1 and "tampered" in err, err
    assert not s.client.exists()
    # Same length, one byte changed: the hash gives it away.
    original = TrustStore.load(s.store).to_json()
    target.write_bytes(original.replace(b'"name": "vendor"', b'"name": "vendoR"'))
    code, out, err = first_refresh_raw(s, capsys, url)
    assert code == 1 and "tampered" in err and json.loads(out)["error"]["kind"] == "LengthOrHashMismatchError", err
    assert not s.client.exists()


def first_refresh_raw(s: Setup, capsys: pytest.CaptureFixture[str], url: str) -> tuple[int, str, str]:
    return refresh(s, capsys, url, "--tuf-root", s.repo / "metadata" / "1.root.json")


def test_a_rollback_to_an_older_trust_store_is_refused(served: tuple[Setup, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The publisher revokes the vendor key (store v2); the server's operator then serves the old metadata
    again (v1: still validly signed and not yet expired) to bring the vendor key back."""
    s, url = served
    first_refresh(s, capsys, url)
    old_timestamp = (s.repo / "metadata" / "timestamp.json").read_bytes()
    published = TrustStore.load(s.store)
    published.revoke(s.key("vendor").key_id)
    published.save(s.store)
    assert run(capsys, "trust-repo", "publish", s.repo, "--store", s.store, *online(s))[0] == 0
    assert refresh(s, capsys, url)[0] == 0
    assert keys_of(s.client)[s.key("vendor").key_id][1] is True
    after_v2 = s.client.read_bytes()
    (s.repo / "metadata" / "timestamp.json").write_bytes(old_timestamp)
    code, out, err = refresh(s, capsys, url)
    assert code == 1 and "rollback refused" in err, err
    assert json.loads(out)["error"]["kind"] == "BadVersionNumberError"
    assert s.client.read_bytes() == after_v2


def test_expired_timestamp_is_refused(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """A frozen repository: metadata signed ten days ago with a one-day timestamp, replayed today."""
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    init(setup, capsys, "--now", ten_days_ago, "--snapshot-days", "30")
    with serve_trust_repo(setup.repo) as url:
        code, out, err = first_refresh_raw(setup, capsys, url)
    assert code == 1 and "expired" in err and "timestamp" in err, err
    assert json.loads(out)["error"]["kind"] == "ExpiredMetadataError"
    assert not setup.client.exists()


def test_expired_targets_are_refused_even_under_a_fresh_timestamp(setup: Setup,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ten_days_ago = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    init(setup, capsys, "--now", ten_days_ago, "--targets-days", "1", "--snapshot-days", "30",
         "--timestamp-days", "30")
    with serve_trust_repo(setup.repo) as url:
        code, _, err = first_refresh_raw(setup, capsys, url)
    assert code == 1 and "expired" in err and "targets" in err, err
    assert not setup.client.exists()


def test_refresh_timestamp_keeps_an_unchanged_store_fresh(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    init(setup, capsys, "--now", two_days_ago)
    with serve_trust_repo(setup.repo) as url:
        assert first_refresh_raw(setup, capsys, url)[0] == 1  # the one-day timestamp has expired
        code, _, err = run(capsys, "trust-repo", "refresh-timestamp", setup.repo, "--timestamp-key",
                           setup.keys["timestamp"])
        assert code == 0, err
        code, out, err = first_refresh_raw(setup, capsys, url)
    assert code == 0 and json.loads(out)["timestamp_version"] == 2, err


# -------------------------------------------------------------------------------------- availability
def test_an_unreachable_or_empty_server_is_unavailable(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    init(setup, capsys)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = first_refresh_raw(setup, capsys, f"http://127.0.0.1:{port}")
    assert code == 3 and "unreachable" in err and err.count("\n") == 1, err
    empty = setup.tmp / "empty"
    (empty / "metadata").mkdir(parents=True)
    with serve_trust_repo(empty) as url:
        code, _, err = first_refresh_raw(setup, capsys, url)
    assert code == 3 and "HTTP 404" in err, err
    assert not setup.client.exists()


def test_bad_input_is_exit_2(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    init(setup, capsys)
    url = "http://127.0.0.1:9"
    code, _, err = refresh(setup, capsys, url)
    assert code == 2 and "--tuf-root is needed" in err, err
    code, _, err = refresh(setup, capsys, url, "--tuf-root", setup.repo / "metadata" / "timestamp.json")
    assert code == 2 and "not root" in err, err
    code, _, err = refresh(setup, capsys, url, "--tuf-root", setup.store)
    assert code == 2 and "not TUF metadata" in err, err
    code, _, err = run(capsys, "trust-repo", "init", setup.repo, "--store", setup.store, "--root-key",
                       setup.keys["root1"], "--root-threshold", "1", *online(setup))
    assert code == 2 and "already holds metadata" in err, err
    code, _, err = run(capsys, "trust-repo", "publish", setup.repo, "--store", setup.store, "--targets-key",
                       setup.keys["snapshot"], "--snapshot-key", setup.keys["snapshot"], "--timestamp-key",
                       setup.keys["timestamp"])
    assert code == 2 and "not a targets key" in err, err
    code, _, err = run(capsys, "trust-repo", "init", setup.tmp / "r2", "--store", setup.store, "--root-key",
                       setup.keys["root1"], "--root-threshold", "2", *online(setup))
    assert code == 2 and "threshold must be between 1 and its 1 keys" in err, err


# ------------------------------------------------------------------------- the roles, consumed by role
GOLDEN = Path(__file__).resolve().parents[1] / "golden_core"


def test_receipt_verify_takes_the_verifier_and_log_keys_from_a_tuf_distributed_store(
        setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    """The trust store arrives through TUF, then ``receipt verify --trust --log-trust`` takes the verifier key
    (role verifier) and the log key (role registry) from it instead of key files."""
    store = TrustStore.load(setup.store)
    verifier_key = PublicKey.load(GOLDEN / "verifier.pub")
    store.add(verifier_key, Role.VERIFIER, name="golden verifier")
    store.add(PublicKey.load(GOLDEN / "log.pub"), Role.REGISTRY, name="golden log")
    store.remove(setup.key("log").key_id)  # one registry key: the golden log's
    store.save(setup.store)
    init(setup, capsys)
    setup.client.parent.mkdir()
    with serve_trust_repo(setup.repo) as url:
        first_refresh(setup, capsys, url)
    receipt = ["receipt", "verify", GOLDEN / "receipt.receipt", "--log-copy", GOLDEN / "log-copy.json", "--json"]
    code, out, err = run(capsys, *receipt, "--trust", setup.client, "--log-trust", setup.client)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["log"]["checkpoint_signature"] == "verified" and doc["log"]["inclusion"] == "verified"
    assert doc["verifier_key_id"] == verifier_key.key_id

    # Trusted for another role only, or revoked: the receipt does not verify (1).
    other = setup.tmp / "vendor-only.json"
    wrong = TrustStore()
    wrong.add(verifier_key, Role.VENDOR)
    wrong.save(other)
    code, _, err = run(capsys, *receipt, "--trust", other, "--log-trust", setup.client)
    assert code == 1 and "not as verifier" in err, err
    revoked = TrustStore.load(setup.client)
    revoked.revoke(verifier_key.key_id)
    revoked.save(other)
    code, _, err = run(capsys, *receipt, "--trust", other, "--log-trust", setup.client)
    assert code == 1 and "revoked" in err, err
    # No such store, or one with two registry keys: bad input (2).
    code, _, err = run(capsys, *receipt, "--trust", setup.client, "--log-trust", setup.store.with_name("x.json"))
    assert code == 2, err
    two = TrustStore.load(setup.client)
    two.add(setup.key("log").public_key, Role.REGISTRY)
    two.save(other)
    code, _, err = run(capsys, *receipt, "--trust", setup.client, "--log-trust", other)
    assert code == 2 and "exactly one unrevoked key trusted as registry" in err, err
    # One registry key, but not the one that signed the checkpoint: refused (1).
    one_wrong = TrustStore.load(setup.store)
    one_wrong.remove(PublicKey.load(GOLDEN / "log.pub").key_id)
    one_wrong.add(setup.key("log").public_key, Role.REGISTRY)
    one_wrong.save(other)
    code, _, err = run(capsys, *receipt, "--trust", setup.client, "--log-trust", other)
    assert code == 1, err


def test_registry_audit_takes_the_log_key_from_a_trust_store(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    trust = setup.tmp / "log-trust.json"
    store = TrustStore()
    store.add(PublicKey.load(GOLDEN / "log.pub"), Role.REGISTRY)
    store.save(trust)
    audit = ["registry", "audit", "--log-copy", GOLDEN / "log-copy.json", "--from", GOLDEN / "checkpoint-1.note"]
    code, _, err = run(capsys, *audit, "--log-trust", trust)
    assert code == 0, err
    code, _, err = run(capsys, *audit)
    assert code == 2 and "--log-pub is needed" in err, err
    forked = [*audit[:-1], GOLDEN / "checkpoint-forked.note", "--log-trust", trust]
    assert run(capsys, *forked)[0] == 1


def test_trust_repo_serve_is_a_process_that_clients_refresh_from(setup: Setup,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``trust-repo serve`` (what the demo starts, as it starts witnesses): first line JSON with the URL; SIGTERM
    stops it with exit 0."""
    import subprocess
    import sys

    init(setup, capsys)
    setup.client.parent.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "pawprint", "trust-repo", "serve", str(setup.repo), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = json.loads(process.stdout.readline())["url"]
        assert first_refresh(setup, capsys, url)["keys"] == 4
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    code, _, err = run(capsys, "trust-repo", "serve", setup.tmp, "--json")
    assert code == 2 and "not a trust repository" in err, err
