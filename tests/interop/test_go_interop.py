"""pawprint's checkpoints and Merkle proofs, checked by an independent implementation: Go's
``golang.org/x/mod/sumdb/note`` (C2SP signed notes) and ``sumdb/tlog`` (RFC 6962 trees), driven by
``checkpoint_interop.go`` beside this file.

The Go program is built offline in GOPATH mode against Debian's source package (golang-golang-x-mod-dev,
under /usr/share/gocode/src) with Debian's golang-go; ``make go`` installs both (``make test`` runs it). A
missing Go is a broken set-up: the test fails and says so, it is never skipped.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from protocol import (
    CHECKPOINT_KIND,
    Checkpoint,
    CheckpointError,
    MerkleTree,
    NoteSigningKey,
    PrivateKey,
    ProofError,
    SignatureError,
    SignedCheckpoint,
    binding_key_hash,
    checkpoint_public_key,
    cosign_checkpoint,
    leaf_hash,
    legacy_key_hash,
    note_key_hash,
    open_checkpoint,
    parse_checkpoint,
    parse_verifier_key,
    sign_checkpoint,
    verifier_key,
    verify_consistency,
    verify_inclusion,
)
from protocol._checkpoint import CHECKPOINT_KEY_PURPOSE, NoteSignature
from tests.verifier.registry_kit import LOG_KEY, NOW, VENDOR, register, tiny_bundle, trust
from verifier import Registry
from verifier._store import DB_NAME

HERE = Path(__file__).resolve().parent
GOPATH_SOURCES = Path("/usr/share/gocode")  # Debian's golang-golang-x-mod-dev
TREE_SIZE = 70  # every inclusion and consistency proof of every tree up to this size


@pytest.fixture(scope="module")
def go_interop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    note_src = GOPATH_SOURCES / "src/golang.org/x/mod/sumdb/note"
    if go is None or not note_src.is_dir():
        pytest.fail("the Go interop test needs Debian's golang-go and golang-golang-x-mod-dev: run `make go`")
    out = tmp_path_factory.mktemp("go")
    # GOPATH mode (GO111MODULE=off): imports resolve in Debian's /usr/share/gocode/src, nothing is fetched.
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH_SOURCES), "GOFLAGS": "", "GOPROXY": "off",
           "GOCACHE": str(out / "cache"), "CGO_ENABLED": "0"}
    binary = out / "checkpoint_interop"
    done = subprocess.run([go, "build", "-o", str(binary), "checkpoint_interop.go"], cwd=HERE, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"go build failed:\n{done.stderr}"
    return binary


def ask_go(binary: Path, **request: Any) -> dict[str, Any]:
    done = subprocess.run([str(binary)], input=json.dumps(request), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in answer, answer["error"]
    return answer


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def go_signer_key(name: str, seed: bytes) -> str:
    """Go's ``note.NewSigner`` key string for an Ed25519 seed."""
    public = NoteSigningKey(seed).public_key
    return f"PRIVATE+KEY+{name}+{note_key_hash(name, public).hex()}+{b64(bytes([1]) + seed)}"


def registry_log(path: Path, count: int) -> tuple[list[str], list[bytes], Registry]:
    registry = Registry(path, log_key=LOG_KEY, clock=lambda: NOW)
    for seed in range(count):
        bundle = tiny_bundle(seed)
        registry.publish(register(bundle, f"base-{seed}"), bundle, trust())
    with sqlite3.connect(path / DB_NAME) as db:
        notes = [str(r[0]) for r in db.execute("SELECT note FROM checkpoints ORDER BY size")]
        leaves = [bytes(r[0]) for r in db.execute("SELECT leaf FROM entries ORDER BY idx")]
    return notes, leaves, registry


# ------------------------------------------------------------------------------------------- checkpoints
def test_go_note_opens_the_registrys_checkpoints(go_interop: Path, tmp_path: Path) -> None:
    notes, leaves, registry = registry_log(tmp_path, 3)
    origin = parse_checkpoint(notes[-1]).checkpoint.origin
    published = registry.log.verifier_key()
    checkpoint_key = checkpoint_public_key(LOG_KEY)
    assert published == verifier_key(origin, checkpoint_key)
    assert parse_verifier_key(published) == (origin, checkpoint_key)
    answer = ask_go(go_interop, verifier_key=published, key_name=origin, public_key=b64(checkpoint_key.raw),
                    notes=notes, leaves=[b64(d) for d in leaves])
    assert answer["verifier_key"] == published  # Go derives the same key ID and encoding
    assert len(answer["notes"]) == len(notes) == 4  # sizes 0..3
    standard = f"{origin} {note_key_hash(origin, checkpoint_key).hex()}"
    binding = f"{origin} {binding_key_hash(origin, LOG_KEY.public_key).hex()}"
    for note, opened in zip(notes, answer["notes"], strict=True):
        cp = open_checkpoint(note, LOG_KEY.public_key, origin=origin)
        assert "error" not in opened, opened
        assert (opened["origin"], opened["size"], opened["root"]) == (origin, cp.size, b64(cp.root))
        assert opened["extensions"] == [str(cp.time)]
        assert opened["verified"] == [standard]
        assert opened["unverified"] == [binding]  # the binding line: an unknown key, ignored as the spec says
    # tlog hashes the log's leaves to the roots of its checkpoints.
    assert answer["leaf_hashes"] == [b64(leaf_hash(d)) for d in leaves]
    assert answer["roots"] == [opened["root"] for opened in answer["notes"][1:]]


def test_go_and_pawprint_refuse_the_same_broken_notes(go_interop: Path) -> None:
    origin = "pawprint/registry/interop"
    signed = sign_checkpoint(Checkpoint(origin, 5, bytes(range(32)), NOW), LOG_KEY)
    text = signed.text
    body_end = text.index("\n\n")
    standard, binding = signed.signatures
    flipped_sig = bytearray(standard.signature)
    flipped_sig[10] ^= 1
    other_log = sign_checkpoint(signed.checkpoint, VENDOR)  # the same text, another log's keys
    legacy = SignedCheckpoint(signed.checkpoint, (NoteSignature(origin, legacy_key_hash(LOG_KEY.public_key),
                              LOG_KEY.sign(CHECKPOINT_KIND, signed.checkpoint.body().encode())),))
    broken = {
        "body byte": text[:body_end - 3] + chr(ord(text[body_end - 3]) ^ 1) + text[body_end - 2:],
        "signature bit": SignedCheckpoint(signed.checkpoint, (NoteSignature(origin, standard.key_hash,
                                                                            bytes(flipped_sig)), binding)).text,
        "another log": other_log.text,
        "pawprint-1 note": legacy.text,
        "no final newline": text[:-1],
        "carriage return": text.replace("\n", "\r\n", 1),
    }
    answer = ask_go(go_interop, verifier_key=verifier_key(origin, checkpoint_public_key(LOG_KEY)),
                    notes=list(broken.values()))
    for (what, note), opened in zip(broken.items(), answer["notes"], strict=True):
        assert "error" in opened, f"Go accepted the note with a broken {what}"
        if what == "pawprint-1 note":
            # Before C2SP checkpoints: Go cannot check it (no line by a key it knows); pawprint still reads it.
            assert open_checkpoint(note, LOG_KEY.public_key) == signed.checkpoint
            continue
        with pytest.raises((CheckpointError, SignatureError)):
            open_checkpoint(note, LOG_KEY.public_key)


def test_go_signs_the_same_bytes_and_pawprint_opens_go_notes(go_interop: Path) -> None:
    origin = "pawprint/registry/interop"
    signed = sign_checkpoint(Checkpoint(origin, 9, bytes(range(1, 33)), NOW + 5), LOG_KEY)
    body = signed.checkpoint.body()
    seed = LOG_KEY.derived_seed(CHECKPOINT_KEY_PURPOSE)
    answer = ask_go(go_interop, signer_key=go_signer_key(origin, seed), sign_text=body)
    # Ed25519 is deterministic: Go's note.Sign with the checkpoint key writes pawprint's first line exactly.
    assert answer["signed"] == body + "\n" + signed.signatures[0].line()
    assert parse_checkpoint(answer["signed"]).verify_with(origin, checkpoint_public_key(LOG_KEY)) == signed.checkpoint
    # A witness's cosignature made by Go is a line pawprint checks; and Go checks pawprint's cosignatures.
    witness_seed = bytes(range(100, 132))
    witness = NoteSigningKey(witness_seed)
    by_go = ask_go(go_interop, signer_key=go_signer_key("witness.example/w1", witness_seed), sign_text=body)
    cosigned = parse_checkpoint(signed.text + by_go["signed"].split("\n\n", 1)[1])
    assert cosigned.verify(LOG_KEY.public_key) == signed.checkpoint
    assert cosigned.verify_with("witness.example/w1", witness.public_key) == signed.checkpoint
    ours = cosign_checkpoint(signed, "witness.example/w1", witness)
    assert ours.text == cosigned.text
    opened = ask_go(go_interop, verifier_key=verifier_key("witness.example/w1", witness.public_key),
                    notes=[ours.text])["notes"][0]
    assert opened["verified"] == [f"witness.example/w1 {note_key_hash('witness.example/w1', witness.public_key).hex()}"]


def test_verifier_keys_are_checked() -> None:
    key = checkpoint_public_key(LOG_KEY)
    good = verifier_key("example.com/log", key)
    name, _, rest = good.partition("+")
    key_id, _, blob = rest.partition("+")
    for bad in (f"other.example+{key_id}+{blob}", f"{name}+00000000+{blob}", f"{name}+{key_id}",
                f"{name}+{key_id}+{b64(bytes([2]) + key.raw)}", f"a b+{key_id}+{blob}", good + "="):
        with pytest.raises(CheckpointError):
            parse_verifier_key(bad)
    with pytest.raises(CheckpointError):
        verifier_key("has space", key)
    # The checkpoint key is derived for that use alone: not the log key, and another log's differs.
    assert key not in (LOG_KEY.public_key, checkpoint_public_key(VENDOR))
    fixed = bytes(32)  # deterministic: the same log key always has the same checkpoint key
    assert checkpoint_public_key(PrivateKey.from_seed(fixed)) == checkpoint_public_key(PrivateKey.from_seed(fixed))


# ----------------------------------------------------------------------------------------------- proofs
def test_go_tlog_accepts_every_proof_and_refuses_altered_ones(go_interop: Path) -> None:
    rng = random.Random(17)
    leaves = [rng.randbytes(rng.randrange(0, 40)) for _ in range(TREE_SIZE)]
    tree = MerkleTree(leaf_hash(d) for d in leaves)
    inclusion, consistency = [], []
    for size in range(1, TREE_SIZE + 1):
        root = b64(tree.root(size))
        for index in range(size):
            proof = [b64(h) for h in tree.inclusion_proof(index, size)]
            inclusion.append({"index": index, "size": size, "leaf_hash": b64(leaf_hash(leaves[index])),
                              "root": root, "proof": proof})
        for old in range(1, size + 1):
            consistency.append({"old": old, "new": size, "old_root": b64(tree.root(old)), "new_root": root,
                                "proof": [b64(h) for h in tree.consistency_proof(old, size)]})
    answer = ask_go(go_interop, leaves=[b64(d) for d in leaves], inclusion=inclusion, consistency=consistency)
    assert answer["roots"] == [b64(tree.root(n)) for n in range(1, TREE_SIZE + 1)]
    assert set(answer["inclusion"]) == {"ok"} and len(answer["inclusion"]) == len(inclusion)
    assert set(answer["consistency"]) == {"ok"} and len(answer["consistency"]) == len(consistency)

    # Altered proofs: a flipped bit in one hash, a hash dropped, a hash added, the wrong index or size.
    bad_inclusion, bad_consistency = [], []
    for p in rng.sample([p for p in inclusion if p["proof"]], 200):
        proof = list(p["proof"])
        k = rng.randrange(len(proof))
        raw = bytearray(base64.b64decode(proof[k]))
        raw[rng.randrange(32)] ^= 1 << rng.randrange(8)
        proof[k] = b64(bytes(raw))
        bad_inclusion += [{**p, "proof": proof}, {**p, "proof": p["proof"][:-1]},
                          {**p, "proof": [*p["proof"], p["root"]]},
                          {**p, "index": (p["index"] + 1) % p["size"]} if p["size"] > 1 else {**p, "proof": proof}]
    for p in rng.sample([p for p in consistency if p["proof"]], 200):
        proof = list(p["proof"])
        k = rng.randrange(len(proof))
        raw = bytearray(base64.b64decode(proof[k]))
        raw[rng.randrange(32)] ^= 1 << rng.randrange(8)
        proof[k] = b64(bytes(raw))
        bad_consistency += [{**p, "proof": proof}, {**p, "proof": p["proof"][:-1]},
                            {**p, "proof": [*p["proof"], p["new_root"]]}]
    answer = ask_go(go_interop, inclusion=bad_inclusion, consistency=bad_consistency)
    assert "ok" not in answer["inclusion"] and len(answer["inclusion"]) == len(bad_inclusion)
    assert "ok" not in answer["consistency"] and len(answer["consistency"]) == len(bad_consistency)
    for p in bad_inclusion:  # pawprint refuses exactly what Go refuses
        with pytest.raises(ProofError):
            verify_inclusion(base64.b64decode(p["leaf_hash"]), p["index"], p["size"],
                             [base64.b64decode(h) for h in p["proof"]], base64.b64decode(p["root"]))
    for p in bad_consistency:
        with pytest.raises(ProofError):
            verify_consistency(p["old"], p["new"], base64.b64decode(p["old_root"]), base64.b64decode(p["new_root"]),
                               [base64.b64decode(h) for h in p["proof"]])
