"""The auditor's commands from a log copy (``registry export``, then ``--log-copy``) and on the core install.

A log copy is untrusted input like a server: everything in it is checked against ``--log-pub`` and a saved
checkpoint, so a tampered copy fails the audit (exit 1). ``bundle verify``, ``receipt verify`` and ``registry
audit`` run with every extra's library blocked (no torch, scipy, Pillow...): only the core install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from owner._client import submit
from protocol import RECEIPT_FORMAT, REVOKE, Bundle, RegistryStatement
from tests.verifier.fixtures import NOW, Keys, Models, start_env, stop_env

pytest_plugins = ["tests.verifier.fixtures"]

REPO = Path(__file__).resolve().parents[1]

# Run ``pawprint ARGS`` as a core install would: every module of the owner, verifier and zoo extras is missing.
EXTRAS = ("torch", "scipy", "PIL", "safetensors", "tokenizers", "onnx", "onnxruntime", "onnxscript", "transformers",
          "tqdm", "grpc_health")
CORE_ONLY = textwrap.dedent(f"""
    import runpy, sys

    class MissingExtras:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {EXTRAS!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (core install)", name=name)
            return None

    sys.meta_path.insert(0, MissingExtras())
    sys.argv[0] = "pawprint"
    runpy.run_module("pawprint", run_name="__main__", alter_sys=True)
""")


def run(*args: str, core_only: bool = False) -> subprocess.CompletedProcess[str]:
    head = ["-c", CORE_ONLY] if core_only else ["-m", "pawprint"]
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True, timeout=300, cwd=REPO)


@dataclass(frozen=True)
class Flow:
    data: Path  # the verifier's data directory: the base registered (entry 0), then revoked (entry 1)
    saved: Path  # the checkpoint an auditor saved after the registration (size 1)
    receipt: Path  # a derived model's receipt, matched to entry 0 at the size-1 checkpoint
    bundle: Path
    verifier_pub: Path
    log_pub: Path
    trust: Path


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, keys: Keys, models: Models, base_bundle: Bundle) -> Flow:
    home = tmp_path_factory.mktemp("log-copy")
    env = start_env(home / "data", keys, bundle=base_bundle)
    try:
        saved = home / "saved.note"
        saved.write_text(env.registry.latest_checkpoint())
        result = submit(models.derived, keys.owner, env.channel, keys.verifier.public_key, timeout_s=60)
        statement = RegistryStatement(REVOKE, "llama-base", keys.vendor.key_id, base_bundle.manifest_digest, NOW,
                                      reason="superseded").sign(keys.vendor)
        env.registry.revoke(statement, keys.trust())
    finally:
        stop_env(env)
    receipt = home / "derived.pawprint-receipt"
    receipt.write_bytes(result.signed_receipt.to_bytes(RECEIPT_FORMAT))
    bundle = home / "base.bundle"
    bundle.write_bytes(base_bundle.to_bytes())
    keys.verifier.public_key.save(home / "verifier.pub")
    keys.trust().save(home / "trust.json")
    return Flow(home / "data", saved, receipt, bundle, home / "verifier.pub", home / "data" / "log.pub",
                home / "trust.json")


def export(flow: Flow, out: Path) -> dict[str, object]:
    r = run("registry", "export", "-o", str(out), "--data", str(flow.data), "--json")
    assert r.returncode == 0, r.stderr
    report: dict[str, object] = json.loads(r.stdout)
    return report


def test_export_then_audit_prove_and_verify_from_the_copy(flow: Flow, tmp_path: Path) -> None:
    copy = tmp_path / "log.json"
    report = export(flow, copy)
    assert report["entries"] == report["size"] == 2 and report["signature"] == "verified"
    doc = json.loads(copy.read_text())
    assert set(doc) == {"format", "checkpoint", "entries"} and doc["format"] == "pawprint-log-copy/1"
    assert len(doc["entries"]) == 2 and doc["checkpoint"].startswith(str(report["origin"]))

    where = ["--log-copy", str(copy), "--log-pub", str(flow.log_pub)]
    r = run("registry", "audit", "--from", str(flow.saved), *where)
    assert r.returncode == 0, r.stderr
    assert "audit passed: the log grew from 1 to 2 entries consistently" in r.stdout
    r = run("registry", "prove", "llama-base", "--checkpoint", str(flow.saved), *where, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["index"] == 0 and json.loads(r.stdout)["verified"] is True
    r = run("receipt", "verify", str(flow.receipt), "--verifier-pub", str(flow.verifier_pub), *where, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict_rechecked"] is True and out["log"]["inclusion"] == "verified"
    assert [e["index"] for e in out["log"]["entries"]] == [0]


@pytest.mark.parametrize("tamper", ["entry", "drop", "checkpoint"])
def test_a_tampered_copy_fails_the_audit(flow: Flow, tmp_path: Path, tamper: str) -> None:
    copy = tmp_path / "log.json"
    export(flow, copy)
    doc = json.loads(copy.read_text())
    if tamper == "entry":  # one byte of the registration changed
        e = doc["entries"][0]
        mid = len(e) // 2
        doc["entries"][0] = e[:mid] + ("0" if e[mid] != "0" else "1") + e[mid + 1:]
    elif tamper == "drop":  # the revocation withheld
        doc["entries"] = doc["entries"][:1]
    else:  # a checkpoint the log key did not sign
        lines = doc["checkpoint"].split("\n")
        lines[1] = "3"
        doc["checkpoint"] = "\n".join(lines)
    copy.write_text(json.dumps(doc))
    where = ["--log-copy", str(copy), "--log-pub", str(flow.log_pub)]
    r = run("registry", "audit", "--from", str(flow.saved), *where)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "FAILED:" in r.stdout and r.stderr.startswith("pawprint: error: audit failed:")
    if tamper == "entry":  # the receipt is checked against its own checkpoint: only a changed entry shows
        r = run("receipt", "verify", str(flow.receipt), "--verifier-pub", str(flow.verifier_pub), *where)
        # exit 1: the receipt is well formed but the log does not back it (was 2 before exit codes had meanings)
        assert r.returncode == 1 and r.stderr.startswith(f"pawprint: error: {flow.receipt}:"), r.stderr
        assert str(copy) in r.stderr, r.stderr


def test_a_log_copy_needs_the_log_key_and_a_well_formed_file(flow: Flow, tmp_path: Path) -> None:
    copy = tmp_path / "log.json"
    export(flow, copy)
    r = run("registry", "audit", "--from", str(flow.saved), "--log-copy", str(copy))
    assert r.returncode == 2 and "--log-pub is needed to check a log copy's checkpoints" in r.stderr
    for text in ("not json", json.dumps({"format": "other/1", "checkpoint": "", "entries": []}),
                 json.dumps({"format": "pawprint-log-copy/1", "checkpoint": "", "entries": ["zz"]})):
        copy.write_text(text)
        r = run("registry", "audit", "--from", str(flow.saved), "--log-copy", str(copy), "--log-pub",
                str(flow.log_pub))
        assert r.returncode == 2 and r.stderr.startswith(f"pawprint: error: {copy}:"), r.stderr
        assert "Traceback" not in r.stderr


def test_auditor_commands_need_only_the_core_install(flow: Flow, tmp_path: Path) -> None:
    copy = tmp_path / "log.json"
    export(flow, copy)
    where = ["--log-copy", str(copy), "--log-pub", str(flow.log_pub)]
    r = run("bundle", "verify", str(flow.bundle), "--trust", str(flow.trust), "--json", core_only=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["valid"] is True and json.loads(r.stdout)["key_roles"] == ["vendor"]
    r = run("receipt", "verify", str(flow.receipt), "--verifier-pub", str(flow.verifier_pub), *where,
            core_only=True)
    assert r.returncode == 0, r.stderr
    assert "inclusion of matched entries verified" in r.stdout
    assert "verdict not re-derived: needs the verifier extra (pip install 'pawprint[verifier]')" in r.stdout
    r = run("receipt", "verify", str(flow.receipt), "--verifier-pub", str(flow.verifier_pub), "--json",
            core_only=True)
    assert r.returncode == 0 and json.loads(r.stdout)["verdict_rechecked"] is None, r.stderr
    r = run("registry", "audit", "--from", str(flow.saved), *where, core_only=True)
    assert r.returncode == 0 and "audit passed" in r.stdout, r.stderr
    r = run("keys", "generate", "-o", str(tmp_path / "keys"), "--name", "a", "--role", "owner", core_only=True)
    assert r.returncode == 0, r.stderr
    # a verifier's data directory is the verifier's store: it says so, in one line
    r = run("registry", "audit", "--from", str(flow.saved), "--data", str(flow.data), core_only=True)
    assert r.returncode == 2 and "needs the verifier extra" in r.stderr and "Traceback" not in r.stderr


def test_the_cli_imports_no_party_package_until_a_command_runs() -> None:
    code = ("import sys, pawprint.cli; pawprint.cli.build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'owner', 'verifier', 'zoo', 'torch', 'scipy', 'PIL', 'tqdm'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    assert run("--help", core_only=True).returncode == 0


def test_the_parser_repeats_the_libraries_constants() -> None:
    from owner import METHODS
    from pawprint.cli_owner import METHODS as CLI_METHODS
    from pawprint.cli_registry import DEFAULT_MAX_PROBE_SETS as CLI_MAX_PROBE_SETS
    from pawprint.cli_zoo import ATTACKS as CLI_ATTACKS
    from verifier._registry import DEFAULT_MAX_PROBE_SETS
    from zoo.attacks import ATTACKS

    assert (CLI_METHODS, CLI_ATTACKS, CLI_MAX_PROBE_SETS) == (METHODS, ATTACKS, DEFAULT_MAX_PROBE_SETS)
    from pawprint.cli_zoo import FAMILY_ATTACKS as CLI_FAMILY_ATTACKS
    from zoo.attacks import FAMILY_ATTACKS

    assert CLI_FAMILY_ATTACKS == FAMILY_ATTACKS
