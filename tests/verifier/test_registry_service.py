"""The registry over gRPC and from the command line, with real servers on 127.0.0.1: publishing and its refusals
(each with its status, leaving nothing stored), reads and proofs, receipts bound to the log, and the CLI's
publish, list, show, checkpoint, prove and audit, including an auditor catching a rewrite of history made
directly in the database, and checkpoint files with a bad signature or a missing line refused."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from owner._client import request_challenge, submission_requests
from owner._fingerprint import Fingerprint
from protocol import (
    RECEIPT_FORMAT,
    Bundle,
    Checkpoint,
    LogCheckFailed,
    LogEntry,
    PrivateKey,
    PublicKey,
    RegistryStatement,
    SignedMessage,
    check_published,
    check_receipt_entries,
    checkpoint_public_key,
    leaf_hash,
    open_checkpoint,
    open_receipt,
    parse_checkpoint,
    sign_checkpoint,
    sign_message,
    verifier_key,
    verify_consistency,
    verify_inclusion,
)
from protocol._pb import pawprint_pb2, pawprint_pb2_grpc
from protocol.wire import RegistryClientError, RemoteRegistry
from tests.verifier import cli
from tests.verifier.fixtures import Env, Keys
from tests.verifier.registry_kit import (
    LOG_KEY,
    NOW,
    OTHER_VENDOR,
    OWNER,
    STRANGER,
    VENDOR,
    register,
    revoke,
    tiny_bundle,
    trust,
)
from verifier import Registry, ServerConfig, VerifierService, create_server
from verifier._store import DB_NAME

pytest_plugins = ["tests.verifier.fixtures"]

VERIFIER = PrivateKey.from_seed(b"\x16" * 32)


@dataclass
class Server:
    registry: Registry
    server: grpc.Server
    target: str
    data: Path

    def remote(self) -> RemoteRegistry:
        return RemoteRegistry(grpc.insecure_channel(self.target), timeout_s=30)


@contextlib.contextmanager
def serving(data: Path) -> Iterator[Server]:
    registry = Registry(data, log_key=LOG_KEY, clock=lambda: NOW)
    server, port = create_server(VerifierService(VERIFIER, trust(), registry, ServerConfig(insecure_loopback=True)))
    try:
        yield Server(registry, server, f"127.0.0.1:{port}", data)
    finally:
        server.stop(None)
        registry.close()


def status(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except RegistryClientError as e:
        return grpc.StatusCode[e.code]
    return grpc.StatusCode.OK


# ----------------------------------------------------------------------------------------------- gRPC
def test_publish_and_read_over_grpc(tmp_path: Path) -> None:
    with serving(tmp_path) as s:
        remote = s.remote()
        bundle = tiny_bundle(1)
        published = remote.publish(register(bundle, "a"), bundle)
        assert (published.index, published.existing) == (0, False)
        check_published(published, register(bundle, "a"), LOG_KEY.public_key)
        again = remote.publish(register(bundle, "a", signed_at=NOW + 1), bundle)
        assert again.existing and again.index == 0
        for seed in (2, 3, 4):
            b = tiny_bundle(seed)
            remote.publish(register(b, f"b{seed}"), b)
        revoked = remote.revoke(revoke(tiny_bundle(3), "b3"))
        check_published(revoked, revoke(tiny_bundle(3), "b3"), LOG_KEY.public_key)

        note = remote.checkpoint()
        cp = open_checkpoint(note, LOG_KEY.public_key)
        assert cp.size == 5 and note == s.registry.latest_checkpoint()
        entries = remote.entries(0, cp.size)
        assert entries == s.registry.entries(0) and len(entries) == 5
        assert remote.entries(2, 4) == entries[2:4]
        assert remote.get("b2") == (1, entries[1]) and remote.get("4") == (4, entries[4])
        assert remote.get(bundle.manifest_digest.hex()) == (0, entries[0])
        data, proof = remote.inclusion_proof(2, 5)
        assert data == entries[2]
        verify_inclusion(leaf_hash(data), 2, 5, proof, cp.root)
        old = parse_checkpoint(checkpoint_at(s.data, 2)).checkpoint
        verify_consistency(2, 5, old.root, cp.root, remote.consistency_proof(2, 5))
        remote.close()


def test_a_real_base_bundle_is_published_in_chunks(tmp_path: Path, keys: Keys, base_bundle: Bundle) -> None:
    registry = Registry(tmp_path)
    server, port = create_server(VerifierService(keys.verifier, keys.trust(), registry,
                                                 ServerConfig(insecure_loopback=True)))
    try:
        remote = RemoteRegistry(grpc.insecure_channel(f"127.0.0.1:{port}"), chunk_bytes=16 * 1024)
        statement = RegistryStatement("register", "llama-base", keys.vendor.key_id, base_bundle.manifest_digest,
                                      NOW, "apache-2.0").sign(keys.vendor)
        published = remote.publish(statement, base_bundle)
        check_published(published, statement, registry.log_public_key)
        assert max(len(t.data) for t in base_bundle.terms.values()) > 16 * 1024  # several chunks per tensor
        [base] = registry.log_snapshot().bases
        assert base.name == "llama-base" and len(base.invariants) == len(base_bundle.open().groups)
        remote.close()
    finally:
        server.stop(None)
        registry.close()


def checkpoint_at(data: Path, size: int) -> str:
    with sqlite3.connect(data / DB_NAME) as db:
        return str(db.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()[0])


def test_registry_refusals_have_their_status_and_store_nothing(tmp_path: Path) -> None:
    Code = grpc.StatusCode
    with serving(tmp_path) as s:
        remote = s.remote()
        held = tiny_bundle(1)
        remote.publish(register(held, "held"), held)
        before = s.registry.counts()
        other, owner, stranger = tiny_bundle(2, OTHER_VENDOR), tiny_bundle(3, OWNER), tiny_bundle(4, STRANGER)
        assert status(lambda: remote.publish(register(other, "held", OTHER_VENDOR), other)) == Code.ALREADY_EXISTS
        assert status(lambda: remote.publish(register(owner, "o", OWNER), owner)) == Code.PERMISSION_DENIED
        assert status(lambda: remote.publish(register(stranger, "s", STRANGER), stranger)) == Code.UNAUTHENTICATED
        assert status(lambda: remote.publish(register(tiny_bundle(5), "x"), tiny_bundle(6))) == Code.INVALID_ARGUMENT
        assert status(lambda: remote.revoke(revoke(tiny_bundle(7), "held"))) == Code.NOT_FOUND
        assert status(lambda: remote.revoke(revoke(held, "held", OTHER_VENDOR))) == Code.PERMISSION_DENIED
        assert status(lambda: remote.inclusion_proof(1, 1)) == Code.OUT_OF_RANGE
        assert status(lambda: remote.inclusion_proof(0, 2)) == Code.OUT_OF_RANGE
        assert status(lambda: remote.consistency_proof(1, 9)) == Code.OUT_OF_RANGE
        assert status(lambda: remote.get("nobody")) == Code.NOT_FOUND

        stub = pawprint_pb2_grpc.RegistryStub(grpc.insecure_channel(s.target))
        bundle = tiny_bundle(8)
        manifest = bundle.open()
        header = pawprint_pb2.PublishRequest(header=pawprint_pb2.PublishHeader(
            statement=_pb(register(bundle, "new")), manifest=_pb(bundle.signed)))
        chunks = [pawprint_pb2.PublishRequest(chunk=r.chunk)
                  for r in list(submission_requests(bundle.signed, manifest, bundle.terms, 8))[1:]]

        def send(requests: list[pawprint_pb2.PublishRequest]) -> grpc.StatusCode:
            try:
                stub.Publish(iter(requests), timeout=30)
            except grpc.RpcError as e:
                return e.code()  # type: ignore[no-any-return]
            return Code.OK

        bad_chunk = pawprint_pb2.PublishRequest(chunk=pawprint_pb2.TensorChunk(
            tensor_index=0, offset=0, data=bytes(len(chunks[0].chunk.data))))
        assert send(chunks) == Code.INVALID_ARGUMENT  # no header
        assert send([header, *chunks[:-1]]) == Code.INVALID_ARGUMENT  # truncated
        assert send([header, bad_chunk, *chunks[1:]]) == Code.INVALID_ARGUMENT  # bytes not matching the digest
        assert send([header, header, *chunks]) == Code.INVALID_ARGUMENT
        wrong_kind = pawprint_pb2.PublishRequest(header=pawprint_pb2.PublishHeader(
            statement=_pb(sign_as(register(bundle, "new"), "receipt")), manifest=_pb(bundle.signed)))
        assert send([wrong_kind, *chunks]) == Code.UNAUTHENTICATED
        assert s.registry.counts() == before and s.registry.size() == 1, "a refusal left something stored"
        assert send([header, *chunks]) == Code.OK  # the unbroken stream goes through
        assert s.registry.size() == 2


def _pb(signed: SignedMessage) -> pawprint_pb2.SignedPayload:
    return pawprint_pb2.SignedPayload(payload=signed.payload, signature=signed.signature,
                                      public_key=signed.public_key.raw)


def sign_as(signed: SignedMessage, kind: str) -> SignedMessage:
    return SignedMessage(signed.payload, VENDOR.sign(kind, signed.payload), VENDOR.public_key)


# ------------------------------------------------------------------------------------------- receipts
def _receipt(env: Env, fp: Fingerprint) -> SignedMessage:
    ch = request_challenge(env.stub, env.keys.verifier.public_key, env.keys.owner.key_id, 10)
    manifest = dataclasses.replace(fp.manifest, nonce=ch.nonce)
    signed = sign_message(manifest, env.keys.owner, "manifest")
    reply = env.stub.Submit(submission_requests(signed, manifest, fp.terms, 64 * 1024), timeout=60)
    return SignedMessage(bytes(reply.payload), bytes(reply.signature), PublicKey(bytes(reply.public_key)))


def test_receipt_names_the_checkpoint_and_each_match_s_entry(env: Env, derived_fingerprint: Fingerprint,
                                                              tmp_path: Path) -> None:
    signed = _receipt(env, derived_fingerprint)
    receipt = open_receipt(signed, env.keys.verifier.public_key)
    assert receipt.checkpoint is not None
    cp = open_checkpoint(receipt.checkpoint, env.registry.log_public_key)
    assert (cp.size, cp.root) == (receipt.registry.size, receipt.registry.root)
    [match] = receipt.matches
    assert match.name == "llama-base" and match.log_index == 0
    remote = RemoteRegistry(grpc.insecure_channel(env.target))
    [proven] = check_receipt_entries(remote, receipt)
    assert proven.index == 0 and LogEntry.from_bytes(proven.data).open(env.registry.log_public_key).name == match.name
    lying = dataclasses.replace(receipt, matches=(dataclasses.replace(match, name="another-base"),))
    with pytest.raises(LogCheckFailed, match="not the registration"):
        check_receipt_entries(remote, lying)
    remote.close()

    # The same from the command line: the receipt file, the verifier's key, the log's key and the server.
    path = tmp_path / "r.receipt"
    path.write_bytes(signed.to_bytes(RECEIPT_FORMAT))
    env.keys.verifier.public_key.save(tmp_path / "verifier.pub")
    env.registry.log_public_key.save(tmp_path / "log.pub")
    r = run("receipt", "verify", str(path), "--verifier-pub", str(tmp_path / "verifier.pub"), "--registry",
            env.target, "--insecure-loopback", "--log-pub", str(tmp_path / "log.pub"), "--json")
    log = json.loads(r.stdout)["log"]
    assert log["checkpoint_signature"] == "verified" and log["inclusion"] == "verified"
    assert log["entries"][0]["index"] == 0
    r = run("receipt", "verify", str(path), "--verifier-pub", str(tmp_path / "verifier.pub"), "--log-pub",
            str(tmp_path / "verifier.pub"), check=False)
    assert r.code == 1 and "no signature line by the log key" in r.stderr  # well formed, does not verify


# ------------------------------------------------------------------------------------------------ CLI
@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run(*args: str, check: bool = True) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    r = Run(code, out.getvalue(), err.getvalue())
    if check:
        assert r.code == 0, r.stderr
    return r


def test_command_line_publish_prove_and_audit_catch_a_rewrite(tmp_path: Path) -> None:
    VENDOR.save(tmp_path / "vendor.key")
    LOG_KEY.public_key.save(tmp_path / "log.pub")
    bundles = []
    for seed in range(4):
        bundles.append(tmp_path / f"b{seed}.bundle")
        bundles[-1].write_bytes(tiny_bundle(seed).to_bytes())
    with serving(tmp_path / "data") as s:
        net = ["--registry", s.target, "--insecure-loopback", "--log-pub", str(tmp_path / "log.pub")]
        out = json.loads(run("registry", "publish", str(bundles[0]), "-k", str(tmp_path / "vendor.key"), "--name",
                             "base-a", "--licence", "mit", "--release-date", "2024-01-02", "--description",
                             "the first", *net, "--json").stdout)
        assert out["index"] == 0 and not out["existing"] and out["checkpoint_signature"] == "verified"
        saved = tmp_path / "saved.checkpoint"
        saved_report = json.loads(run("registry", "checkpoint", "-o", str(saved), *net, "--json").stdout)
        assert open_checkpoint(saved.read_text(), LOG_KEY.public_key).size == 1
        # The log's C2SP note verifier key is published (tests/interop checks it with Go's note package).
        origin = parse_checkpoint(saved.read_text()).checkpoint.origin
        assert saved_report["verifier_key"] == verifier_key(origin, checkpoint_public_key(LOG_KEY))
        for i in (1, 2, 3):
            run("registry", "publish", str(bundles[i]), "-k", str(tmp_path / "vendor.key"), "--name", f"base-{i}",
                *net)
        run("registry", "revoke", "base-2", "-k", str(tmp_path / "vendor.key"), "--reason", "bad probes", *net)

        listed = json.loads(run("registry", "list", *net, "--json").stdout)
        assert listed["size"] == 5 and listed["checkpoint_signature"] == "verified"
        assert [e["name"] for e in listed["entries"]] == ["base-a", "base-1", "base-2", "base-3", "base-2"]
        assert listed["entries"][2]["revoked_by"] == 4 and listed["entries"][0]["licence"] == "mit"
        assert all(e["signatures"] == "verified" for e in listed["entries"])
        shown = json.loads(run("registry", "show", "base-a", *net, "--json").stdout)
        assert shown["release_date"] == "2024-01-02" and shown["revoked_by"] is None
        assert "base-3" in run("registry", "list", *net).stdout

        proved = json.loads(run("registry", "prove", "base-a", "--checkpoint", str(saved), *net, "--json").stdout)
        assert proved["verified"] and proved["index"] == 0
        r = run("registry", "prove", "base-3", "--checkpoint", str(saved), *net, check=False)
        assert r.code == 1 and "after the checkpoint" in r.stderr  # not provable against that checkpoint
        r = run("registry", "prove", "base-a", "--checkpoint", str(saved), "--registry", s.target,
                "--insecure-loopback", check=False)
        assert r.code == 2 and "--log-pub" in r.stderr

        audit = json.loads(run("registry", "audit", "--from", str(saved), *net, "--json").stdout)
        assert audit["ok"] and audit["entries"] == 5 and audit["revocations"] == 1

        # Checkpoint files with a bad signature or a missing line are refused.
        text = saved.read_text()
        bad_sig, no_line = tmp_path / "bad-sig.checkpoint", tmp_path / "no-line.checkpoint"
        cp = parse_checkpoint(text)
        bad_sig.write_text(dataclasses.replace(cp, signatures=(dataclasses.replace(
            cp.signatures[0], signature=bytes(64)),)).text)
        no_line.write_text("\n".join(text.split("\n")[1:]))
        # a signature that does not verify is a failed check (1); a file that is no checkpoint is bad input (2)
        for path, message, code in ((bad_sig, "does not verify", 1), (no_line, "4 lines", 2)):
            r = run("registry", "prove", "base-a", "--checkpoint", str(path), *net, check=False)
            assert r.code == code and message in r.stderr, r.stderr
            r = run("registry", "audit", "--from", str(path), *net, check=False)
            assert r.code == code and ("saved checkpoint" if code == 1 else "not a checkpoint") in r.stderr, r.stderr

        # History rewritten in the database: entry 0 replaced by another validly signed registration.
        forged = LogEntry(register(tiny_bundle(99), "base-a"), tiny_bundle(99).signed, NOW).to_bytes()
        with sqlite3.connect(s.data / DB_NAME) as db:
            db.execute("UPDATE entries SET leaf = ? WHERE idx = 0", (forged,))
        db.close()
        r = run("registry", "audit", "--from", str(saved), *net, check=False)
        assert r.code == 1 and "history was rewritten" in r.stderr, r.stderr
        assert "FAILED:" in r.stdout
        r = run("registry", "audit", "--from", str(saved), "--data", str(s.data), check=False)
        assert r.code == 1 and "history was rewritten" in r.stderr, r.stderr
        r = run("registry", "list", "--data", str(s.data), check=False)  # a checked local open refuses outright
        assert r.code == 2 and "entry 0" in r.stderr
        with sqlite3.connect(s.data / DB_NAME) as db:
            db.execute("DELETE FROM entries WHERE idx = 1")
        db.close()
        r = run("registry", "audit", "--from", str(saved), "--data", str(s.data), check=False)
        assert r.code == 1 and "entries were removed" in r.stderr, r.stderr


def test_command_line_on_a_local_data_directory(tmp_path: Path) -> None:
    VENDOR.save(tmp_path / "vendor.key")
    trust().save(tmp_path / "trust.json")
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(tiny_bundle(1).to_bytes())
    data = ["--data", str(tmp_path / "data")]
    r = run("registry", "publish", str(bundle), "-k", str(tmp_path / "vendor.key"), "--name", "local", *data,
            check=False)
    assert r.code == 2 and "--trust" in r.stderr
    run("registry", "publish", str(bundle), "-k", str(tmp_path / "vendor.key"), "--name", "local", *data,
        "--trust", str(tmp_path / "trust.json"))
    assert (tmp_path / "data" / "log.pub").is_file() and (tmp_path / "data" / "log.key").is_file()
    # the administrator's path appends to the same log
    admin = tmp_path / "admin.bundle"
    admin.write_bytes(tiny_bundle(2).to_bytes())
    (tmp_path / "b3.bundle").write_bytes(tiny_bundle(3).to_bytes())
    run("registry", "add", str(admin), *data, "--name", "admin-added", "--trust", str(tmp_path / "trust.json"))
    listed = json.loads(run("registry", "list", *data, "--json").stdout)
    assert [(e["name"], e["signed_by"]) for e in listed["entries"]] == [("local", "vendor"), ("admin-added", "log")]
    run("registry", "checkpoint", "-o", str(tmp_path / "cp"), *data)
    run("registry", "prove", "1", "--checkpoint", str(tmp_path / "cp"), *data)
    # A saved checkpoint is replaced only by one that extends it: never by a fork, another log or a smaller tree.
    log_key = PrivateKey.load(tmp_path / "data" / "log.key")
    origin = parse_checkpoint((tmp_path / "cp").read_text()).checkpoint.origin
    fork = tmp_path / "fork"
    fork.write_text(sign_checkpoint(Checkpoint(origin, 1, bytes(32), NOW), log_key).text)
    r = run("registry", "checkpoint", "-o", str(fork), *data, check=False)
    assert r.code == 1 and "does not extend" in r.stderr, r.stderr  # a fork: the check fails
    ahead = tmp_path / "ahead"
    ahead.write_text(sign_checkpoint(Checkpoint(origin, 9, bytes(32), NOW), log_key).text)
    r = run("registry", "checkpoint", "-o", str(ahead), *data, check=False)
    assert r.code == 1 and "shrank" in r.stderr, r.stderr  # the check fails
    (tmp_path / "junk").write_text("not a checkpoint")
    assert run("registry", "checkpoint", "-o", str(tmp_path / "junk"), *data, check=False).code == 2
    old = tmp_path / "old"
    run("registry", "checkpoint", "-o", str(old), *data)
    run("registry", "publish", str(tmp_path / "b3.bundle"), "-k", str(tmp_path / "vendor.key"), "--name", "third",
        *data, "--trust", str(tmp_path / "trust.json"))
    assert "consistent with the 2-entry checkpoint" in run("registry", "checkpoint", "-o", str(old), *data).stdout
    assert "audit passed" in run("registry", "audit", "--from", str(tmp_path / "cp"), *data, "--trust",
                                 str(tmp_path / "trust.json")).stdout
    r = run("registry", "list", "--data", str(tmp_path / "nothing"), check=False)
    assert r.code == 2 and "no registry here" in r.stderr
