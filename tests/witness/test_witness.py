"""Witnesses (issue 17, item 2): ``pawprint witness serve`` processes cosign the registry log's checkpoints only
on a valid consistency proof, keep what they cosigned across restarts, and refuse backdated checkpoints; the
log collects their cosignatures; clients with a "k of n" policy refuse what the witnesses did not cosign.

The attacks are the issue's, by a log operator holding the live log key: two forks of the log, each consistent
with the checkpoint an auditor saved, shown to different readers; a checkpoint dated before one already
cosigned. Both passed ``registry audit`` before witnesses; now the reader's policy refuses them.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pawprint import cli
from protocol import (
    AddCheckpoint,
    Checkpoint,
    MerkleTree,
    PrivateKey,
    Role,
    TrustStore,
    WitnessPolicy,
    WitnessPolicyError,
    checkpoint_public_key,
    leaf_hash,
    parse_checkpoint,
    sign_checkpoint,
    verifier_key,
    witness_signing_key,
)
from tests.verifier.registry_kit import LOG_KEY, NOW, register, tiny_bundle, trust
from verifier import Registry
from verifier._log import default_origin
from verifier._witnessing import WitnessSet
from witness import Witness, WitnessStateError

REPO = Path(__file__).resolve().parents[2]
KEYS = [PrivateKey.from_seed(bytes([0x61 + i]) * 32) for i in range(3)]
NAMES = ["w1.example/witness", "w2.example/witness", "w3.example/witness"]
ORIGIN = default_origin(LOG_KEY.public_key)
LOG_VKEY = verifier_key(ORIGIN, checkpoint_public_key(LOG_KEY))


def _trust() -> TrustStore:
    store = trust()
    for key, name in zip(KEYS, NAMES, strict=True):
        store.add(witness_signing_key(key).public_key, Role.WITNESS, name=name)
    return store


def _keys() -> tuple[tuple[str, object], ...]:
    return tuple((n, witness_signing_key(k).public_key) for n, k in zip(NAMES, KEYS, strict=True))


def _registry(path: Path, urls: list[str], times: list[int] | None = None) -> Registry:
    clock = iter(times or [])
    reg = Registry(path, log_key=LOG_KEY, clock=lambda: next(clock, NOW + 1000))
    reg.witnesses = WitnessSet(tuple(urls), _keys(), timeout_s=10)  # type: ignore[arg-type]
    return reg


def _publish(reg: Registry, seed: int) -> None:
    bundle = tiny_bundle(seed)
    reg.publish(register(bundle, f"m{seed}"), bundle, _trust())


class _Process:
    def __init__(self, tmp: Path, i: int) -> None:
        self.tmp, self.i = tmp, i
        self.key = tmp / f"w{i}.key"
        if not self.key.exists():
            KEYS[i].save(self.key)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pawprint", "witness", "serve", "--key", str(self.key), "--name", NAMES[self.i],
             "--state", str(self.tmp / f"w{self.i}.state"), "--log", LOG_VKEY, "--listen", "127.0.0.1:0",
             "--json"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            error = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"witness {self.i} did not start: {error}")
        self.url = json.loads(line)["url"]

    def restart(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[_Process]]:
    procs = [_Process(tmp_path, i) for i in range(3)]
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def _post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url + "/add-checkpoint", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _cli(*argv: str) -> tuple[int, dict[str, object]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([*argv, "--json"])
    document = json.loads(out.getvalue()) if out.getvalue().strip() else {}
    return code, {**document, "stderr": err.getvalue()}


def test_a_split_view_is_refused_by_a_reader_requiring_two_of_three_witnesses(
        tmp_path: Path, witnesses: list[_Process]) -> None:
    store_path = tmp_path / "trust.json"
    _trust().save(store_path)
    honest = tmp_path / "honest"
    reg = _registry(honest, [w.url for w in witnesses], [NOW, NOW + 10])
    _publish(reg, 1)
    assert reg.last_witnessed is not None and reg.last_witnessed.cosigned == NAMES
    saved = tmp_path / "saved.note"
    saved.write_text(reg.latest_checkpoint())  # an auditor's checkpoint: one entry, cosigned by all three
    reg.close()
    # The operator forks the log: a copy of it gets another second entry. It reaches witness 3 first.
    fork = tmp_path / "fork"
    shutil.copytree(honest, fork)
    forked = _registry(fork, [witnesses[2].url], [NOW + 20])
    _publish(forked, 3)
    assert forked.last_witnessed is not None and forked.last_witnessed.cosigned == [NAMES[2]]
    forked.close()
    # Then the honest history goes to all three: witness 3 has cosigned the fork and refuses it (a fork at
    # the same size), the other two cosign it.
    reg = _registry(honest, [w.url for w in witnesses], [NOW + 30])
    _publish(reg, 2)
    assert reg.last_witnessed is not None
    assert reg.last_witnessed.cosigned == NAMES[:2]
    assert "refused (409)" in reg.last_witnessed.failed[witnesses[2].url]
    reg.close()
    # Both histories are signed by the log key and consistent with the saved checkpoint: without witnesses
    # both pass the audit (the attack of the issue) ...
    audit = ["registry", "audit", "--from", str(saved)]
    assert _cli(*audit, "--data", str(honest))[0] == 0
    assert _cli(*audit, "--data", str(fork))[0] == 0
    # ... with "2 of these 3 witnesses" only the one the witnesses saw does.
    policy = ["--witnesses", "2", "--witness-trust", str(store_path)]
    code, report = _cli(*audit, "--data", str(honest), *policy)
    assert code == 0, report
    code, report = _cli(*audit, "--data", str(fork), *policy)
    assert code == 1
    problems = report["problems"]
    assert isinstance(problems, list) and any("cosigned by 1 of the 2 witnesses required" in p for p in problems)
    # and every other reader of the log's checkpoint applies the same policy
    assert _cli("registry", "list", "--data", str(fork), *policy)[0] == 1
    assert _cli("registry", "list", "--data", str(honest), *policy)[0] == 0
    # The fork's operator cannot get it cosigned later either: the witnesses that cosigned the honest log
    # refuse a checkpoint that does not extend it, even after a restart.
    witnesses[0].restart()
    forked = _registry(fork, [witnesses[0].url, witnesses[1].url], [NOW + 40])
    done = forked.witness()
    forked.close()
    assert done.cosigned == []
    assert all("refused (409)" in r for r in done.failed.values()), done.failed


def test_a_backdated_or_future_checkpoint_is_not_cosigned(tmp_path: Path, witnesses: list[_Process]) -> None:
    reg = _registry(tmp_path / "d", [w.url for w in witnesses], [NOW + 100, NOW + 100])
    _publish(reg, 1)
    entries = reg.entries(0)
    reg.close()
    url = witnesses[0].url
    bundle = tiny_bundle(2)
    from protocol import LogEntry

    later = [*entries, LogEntry(register(bundle, "m2"), bundle.signed, NOW + 50, format=2).to_bytes()]
    tree = MerkleTree(leaf_hash(e) for e in later)
    # The operator signs a checkpoint dated before the one the witness cosigned (with the entry dated before
    # it, which is what backdating is for): refused.
    backdated = sign_checkpoint(Checkpoint(ORIGIN, 2, tree.root(), NOW + 50), LOG_KEY).text
    status, text = _post(url, AddCheckpoint(1, tuple(tree.consistency_proof(1, 2)), backdated).to_bytes())
    assert status == 422 and "backdated" in text
    # ... and a reader requiring any witness refuses it
    with pytest.raises(WitnessPolicyError):
        WitnessPolicy.from_trust(_trust(), 1).check(backdated)
    # dated in the witness's future: refused
    future = sign_checkpoint(Checkpoint(ORIGIN, 2, tree.root(), int(time.time()) + 3600), LOG_KEY).text
    status, text = _post(url, AddCheckpoint(1, tuple(tree.consistency_proof(1, 2)), future).to_bytes())
    assert status == 422 and "future" in text
    # the same tree honestly dated: cosigned (the refusals changed nothing)
    fine = sign_checkpoint(Checkpoint(ORIGIN, 2, tree.root(), NOW + 150), LOG_KEY).text
    status, text = _post(url, AddCheckpoint(1, tuple(tree.consistency_proof(1, 2)), fine).to_bytes())
    assert status == 200 and text.startswith(f"\u2014 {NAMES[0]} ")


def _witness(tmp_path: Path, clock: float = NOW + 10_000) -> Witness:
    return Witness(KEYS[0], NAMES[0], {ORIGIN: checkpoint_public_key(LOG_KEY)}, tmp_path / "state.json",
                   clock=lambda: clock)


def _notes(sizes: list[int], fork_at: int | None = None) -> tuple[list[str], MerkleTree, MerkleTree]:
    leaves = [f"entry {i}".encode() for i in range(max(sizes))]
    forked = [(b"fork " + x) if fork_at is not None and i >= fork_at else x for i, x in enumerate(leaves)]
    tree, other = MerkleTree(leaf_hash(x) for x in leaves), MerkleTree(leaf_hash(x) for x in forked)
    return [sign_checkpoint(Checkpoint(ORIGIN, n, tree.root(n), NOW + n), LOG_KEY).text for n in sizes], tree, other


def test_the_witness_answers_each_case_of_the_protocol(tmp_path: Path) -> None:
    w = _witness(tmp_path)
    (n3, n5), tree, other = _notes([3, 5], fork_at=4)
    assert w.add_checkpoint(AddCheckpoint(0, (), n3).to_bytes()).status == 200  # first sight: trust at size 0
    wrong = w.add_checkpoint(AddCheckpoint(0, (), n5).to_bytes())  # the log thinks the witness is at 0
    assert (wrong.status, wrong.content_type, wrong.body) == (409, "text/x.tlog.size", b"3\n")
    bad_proof = tuple(other.consistency_proof(3, 5))  # a proof from another tree
    assert w.add_checkpoint(AddCheckpoint(3, bad_proof, n5).to_bytes()).status == 422
    ok = w.add_checkpoint(AddCheckpoint(3, tuple(tree.consistency_proof(3, 5)), n5).to_bytes())
    assert ok.status == 200
    assert w.add_checkpoint(AddCheckpoint(5, (), n5).to_bytes()).status == 200  # the same again: cosigned again
    same_size_fork = sign_checkpoint(Checkpoint(ORIGIN, 5, other.root(5), NOW + 5), LOG_KEY).text
    assert w.add_checkpoint(AddCheckpoint(5, (), same_size_fork).to_bytes()).status == 409
    assert w.add_checkpoint(b"old 5\n").status == 400
    assert w.add_checkpoint(AddCheckpoint(6, (), n5).to_bytes()).status == 400  # old > size
    stranger = sign_checkpoint(Checkpoint("another/log", 1, tree.root(1), NOW), LOG_KEY).text
    assert w.add_checkpoint(AddCheckpoint(0, (), stranger).to_bytes()).status == 404
    impostor = sign_checkpoint(Checkpoint(ORIGIN, 6, tree.root(5), NOW + 6), PrivateKey.from_seed(b"\x77" * 32)).text
    assert w.add_checkpoint(AddCheckpoint(5, (), impostor).to_bytes()).status == 403
    # What it cosigned is on disk before it answers: a new process on the same state refuses the fork.
    w.close()
    again = _witness(tmp_path)
    assert again.latest(ORIGIN) is not None and again.latest(ORIGIN).size == 5  # type: ignore[union-attr]
    assert again.add_checkpoint(AddCheckpoint(5, (), same_size_fork).to_bytes()).status == 409
    # ... and two witness processes never share one state (each could cosign a different fork)
    with pytest.raises(WitnessStateError, match="in use by another witness"):
        _witness(tmp_path)
    again.close()
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(WitnessStateError, match="not a witness state file"):
        _witness(tmp_path)


def test_the_cli_gives_a_witness_key_and_the_log_side_retries(tmp_path: Path, witnesses: list[_Process]) -> None:
    code, out = _cli("witness", "key", "--key", str(witnesses[0].key), "--name", NAMES[0], "-o",
                     str(tmp_path / "w.pub"))
    assert code == 0 and str(out["verifier_key"]).startswith(NAMES[0] + "+")
    from protocol import PublicKey

    assert PublicKey.load(tmp_path / "w.pub") == witness_signing_key(KEYS[0]).public_key
    # A log with three entries, only now sent to a witness that never saw it: the witness answers 409 (size 0)
    # and the log retries from there.
    reg = Registry(tmp_path / "d", log_key=LOG_KEY, clock=lambda: NOW)
    for seed in (1, 2, 3):
        _publish(reg, seed)
    reg.close()
    store = tmp_path / "trust.json"
    _trust().save(store)
    LOG_KEY.save(tmp_path / "log.key")
    code, out = _cli("registry", "witness", "--data", str(tmp_path / "d"), "--trust", str(store), "--log-key",
                     str(tmp_path / "log.key"), "--witness", witnesses[1].url, "--witness", "http://127.0.0.1:9")
    assert code == 3, out  # one witness unreachable
    assert out["cosigned"] == [NAMES[1]] and "unreachable" in out["failed"]["http://127.0.0.1:9"]  # type: ignore[index]
    note = Registry(tmp_path / "d", log_key=LOG_KEY).latest_checkpoint()
    assert [c.name for c in WitnessPolicy.from_trust(_trust(), 1).check(note)] == [NAMES[1]]
    assert parse_checkpoint(note).verify(LOG_KEY.public_key).size == 3  # still the log's checkpoint


def test_the_report_says_witnessed_only_when_the_readers_policy_was_met(tmp_path: Path) -> None:
    import types

    from verifier._report import FAILED, OK, _checkpoint_check

    w = _witness(tmp_path)
    (note,), _tree, _other = _notes([2])
    answer = w.add_checkpoint(AddCheckpoint(0, (), note).to_bytes())
    assert answer.status == 200
    cosigned = note + answer.body.decode()
    policy = WitnessPolicy.from_trust(_trust(), 1)
    check, seen = _checkpoint_check(types.SimpleNamespace(checkpoint=cosigned), LOG_KEY.public_key,  # type: ignore[arg-type]
                                    policy)
    assert check.state == OK and "Cosigned by w1.example/witness" in check.text
    assert seen is not None and [c.name for c in seen] == [NAMES[0]]
    check, seen = _checkpoint_check(types.SimpleNamespace(checkpoint=note), LOG_KEY.public_key,  # type: ignore[arg-type]
                                    policy)
    assert check.state == FAILED and "cosigned by 0 of the 1 witnesses required" in check.text and seen is None
    check, seen = _checkpoint_check(types.SimpleNamespace(checkpoint=cosigned), LOG_KEY.public_key, None)  # type: ignore[arg-type]
    assert check.state == OK and seen is None  # no policy: not said to be witnessed
