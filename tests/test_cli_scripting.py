"""The command line as scripts use it (issue 20): exit statuses with one meaning each (0 ok, 1 does not verify,
2 bad input or usage, 3 unavailable), ``--json`` on every command with failures as JSON on stdout too,
``--version``, ``report`` refusing invalid receipts, errors that name the file, key and address, and
``verifier health``.

Most cases run ``pawprint.cli.main`` in this process on the committed golden files (``tests/golden_core``): no
model, no torch, no server. ``verifier health`` runs against a real server started here on port 0.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pawprint._common import (
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CODES,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    exit_code,
)
from pawprint.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden_core"
RECEIPT, TAMPERED_RECEIPT = GOLDEN / "receipt.receipt", GOLDEN / "receipt-tampered.receipt"
VERIFIER_PUB, LOG_PUB, TRUST = GOLDEN / "verifier.pub", GOLDEN / "log.pub", GOLDEN / "trust.json"


class Ran:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """``cli(*args)``: ``pawprint ARGS`` in this process, its exit status, stdout and stderr."""

    def run(*args: str | Path) -> Ran:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # --help, --version: argparse exits
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_json_error(r: Ran, code: int, *words: str) -> dict[str, Any]:
    """One failure: the one-line error on stderr, the JSON error object on stdout, the exit status."""
    assert r.code == code, (r.code, r.out, r.err)
    assert r.err.startswith("pawprint: error:") and "Traceback" not in r.err, r.err
    doc = r.json()
    assert doc["ok"] is False and set(doc["error"]) == {"code", "kind", "message"}, doc
    assert doc["error"]["code"] == code and doc["error"]["kind"], doc
    for w in words:
        assert w in doc["error"]["message"] and w in r.err, (w, doc)
    return dict(doc["error"])


# ------------------------------------------------------------------------------------------ exit statuses
def test_the_exit_statuses_are_one_table_in_code_and_readme() -> None:
    assert (EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE) == (0, 1, 2, 3)
    assert sorted(EXIT_CODES) == [0, 1, 2, 3]
    section = (REPO / "README.md").read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d) \| (.+) \|$", section, re.MULTILINE))
    assert sorted(int(k) for k in rows) == [0, 1, 2, 3], rows
    assert "verification failed" in rows["1"] and "bad input" in rows["2"] and "unavailable" in rows["3"]
    assert '{"ok": false, "error": {"code"' in section
    assert "exit status: 0 ok; 1 a verification failed" in " ".join(build_parser().format_help().split())


def test_which_error_means_which_status() -> None:
    from owner._client import SubmissionError
    from protocol import (
        KeyFileError,
        LogCheckFailed,
        MessageError,
        ProofError,
        SignatureError,
        TrustStoreError,
        UntrustedKeyError,
    )
    from protocol.wire import ChannelError, RemoteFailure
    from verifier import NullError, RegistryCorrupt

    for e in (SignatureError("x"), UntrustedKeyError("x"), ProofError("x"), LogCheckFailed("x")):
        assert exit_code(e) == EXIT_CHECK_FAILED, e
    for e in (MessageError("x"), KeyFileError("x"), TrustStoreError("x"), ChannelError("x"), NullError("x"),
              RegistryCorrupt("x"),
              RemoteFailure("x", "NOT_FOUND"), RemoteFailure("x", "PERMISSION_DENIED"),
              SubmissionError("x", "ABORTED")):
        assert exit_code(e) == EXIT_BAD_INPUT, e
    for e in (RemoteFailure("x", "UNAVAILABLE"), RemoteFailure("x", "DEADLINE_EXCEEDED"),
              SubmissionError("x", "UNAVAILABLE"), SubmissionError("x", "DEADLINE_EXCEEDED")):
        assert exit_code(e) == EXIT_UNAVAILABLE, e
    # while checking input already parsed, a malformed part means it does not verify; a peer or key file never
    assert exit_code(MessageError("x"), verifying=True) == EXIT_CHECK_FAILED
    for e in (ChannelError("x"), KeyFileError("x"), RemoteFailure("x", "NOT_FOUND")):
        assert exit_code(e, verifying=True) == EXIT_BAD_INPUT, e
    # the owner's agent: the verifier's receipt does not verify against its key
    wrapped = SubmissionError("the receipt does not verify")
    wrapped.__cause__ = SignatureError("signature verification failed")
    assert exit_code(wrapped) == EXIT_CHECK_FAILED


# --------------------------------------------------------------------------------------- --json, --version
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                          argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _commands(child, (*path, name))


def test_every_command_takes_json_but_the_demo() -> None:
    commands = dict(_commands(build_parser()))
    assert ("verifier", "health") in commands and len(commands) > 25
    missing = [" ".join(c) for c, p in commands.items() if "--json" not in p._option_string_actions]
    assert missing == ["demo"], missing
    assert "(no --json: it narrates" in " ".join(build_parser().format_help().split())  # the demo says why


def test_version(cli: Callable[..., Ran]) -> None:
    from importlib.metadata import version

    import pawprint

    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"pawprint {version('pawprint')}", r.out
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pawprint.__version__ == project["version"]


def test_a_usage_error_exits_2_and_with_json_says_so_on_stdout(cli: Callable[..., Ran]) -> None:
    r = cli("bundle", "verify", "--json")
    assert r.code == EXIT_BAD_INPUT and "usage: pawprint bundle verify" in r.err
    assert "error: the following arguments are required" in r.err
    doc = r.json()
    assert doc == {"ok": False, "error": {"code": 2, "kind": "UsageError", "message": doc["error"]["message"]}}
    assert "required" in doc["error"]["message"]
    r = cli("bundle", "verify")
    assert r.code == EXIT_BAD_INPUT and r.out == ""  # no --json: nothing on stdout


# ------------------------------------------------------------------------------------ auditor's commands
def test_bundle_verify_statuses_and_names(cli: Callable[..., Ran], tmp_path: Path) -> None:
    r = cli("bundle", "verify", GOLDEN / "bundle.bundle", "--trust", TRUST, "--json")
    assert r.code == 0 and r.json()["valid"] is True, r.err
    key_id = r.json()["key_id"]
    # a term changed after signing: well formed, does not verify (1); the file, its key and the store named
    err = assert_json_error(cli("bundle", "verify", GOLDEN / "bundle-tampered.bundle", "--trust", TRUST, "--json"),
                            1, str(GOLDEN / "bundle-tampered.bundle"), key_id, str(TRUST), "SHA-256")
    assert err["kind"] == "MessageError"
    # a key the trust store does not hold: does not verify (1)
    empty = tmp_path / "empty-trust.json"
    empty.write_text('{"format": "pawprint-trust/1", "keys": []}')
    r = cli("bundle", "verify", GOLDEN / "bundle.bundle", "--trust", empty, "--json")
    if json.loads(TRUST.read_text())["format"] == "pawprint-trust/1":
        assert assert_json_error(r, 1, key_id, str(empty))["kind"] == "UntrustedKeyError"
    # not a bundle, a missing file, a malformed trust store: bad input (2), named
    assert_json_error(cli("bundle", "verify", TRUST, "--trust", TRUST, "--json"), 2, str(TRUST))
    assert_json_error(cli("bundle", "verify", tmp_path / "none.bundle", "--trust", TRUST, "--json"), 2,
                      str(tmp_path / "none.bundle"))
    bad = tmp_path / "bad-trust.json"
    bad.write_text("{")
    assert_json_error(cli("bundle", "verify", GOLDEN / "bundle.bundle", "--trust", bad, "--json"), 2, str(bad))


def test_receipt_verify_statuses_and_names(cli: Callable[..., Ran], tmp_path: Path) -> None:
    from protocol import PublicKey

    verifier_id, log_id = PublicKey.load(VERIFIER_PUB).key_id, PublicKey.load(LOG_PUB).key_id
    r = cli("receipt", "verify", RECEIPT, "--verifier-pub", VERIFIER_PUB, "--log-pub", LOG_PUB, "--log-copy",
            GOLDEN / "log-copy.json", "--json")
    assert r.code == 0 and r.json()["valid"] is True, r.err
    # edited after signing: 1, naming the file and the key ids
    assert_json_error(cli("receipt", "verify", TAMPERED_RECEIPT, "--verifier-pub", VERIFIER_PUB, "--json"), 1,
                      str(TAMPERED_RECEIPT), verifier_id, "signature verification failed")
    # checked against another key: 1, naming the key it was checked against and the one that signed it
    assert_json_error(cli("receipt", "verify", RECEIPT, "--verifier-pub", LOG_PUB, "--json"), 1,
                      str(RECEIPT), f"signed by key {verifier_id}", f"verifier key {log_id}", str(LOG_PUB))
    # the checkpoint against the wrong log key: 1
    assert_json_error(cli("receipt", "verify", RECEIPT, "--verifier-pub", VERIFIER_PUB, "--log-pub", VERIFIER_PUB,
                          "--json"), 1, str(RECEIPT), verifier_id)
    # a log copy that does not back it: 1, naming the copy
    copy = GOLDEN / "log-copy-tampered.json"
    assert_json_error(cli("receipt", "verify", RECEIPT, "--verifier-pub", VERIFIER_PUB, "--log-pub", LOG_PUB,
                          "--log-copy", copy, "--json"), 1, str(RECEIPT), str(copy), "is not in the log")
    # not a receipt, no file, not a key: 2
    assert_json_error(cli("receipt", "verify", TRUST, "--verifier-pub", VERIFIER_PUB, "--json"), 2, str(TRUST))
    assert_json_error(cli("receipt", "verify", tmp_path / "none", "--verifier-pub", VERIFIER_PUB, "--json"), 2,
                      str(tmp_path / "none"))
    assert_json_error(cli("receipt", "verify", RECEIPT, "--verifier-pub", TRUST, "--json"), 2, str(TRUST))
    # nothing listening: 3, naming the address
    address = f"127.0.0.1:{free_port()}"
    err = assert_json_error(cli("receipt", "verify", RECEIPT, "--verifier-pub", VERIFIER_PUB, "--registry", address,
                                "--insecure-loopback", "--timeout", "5", "--json"), 3, address)
    assert err["kind"] == "RegistryClientError"
    # a channel that cannot be opened as asked: 2, naming the address
    assert_json_error(cli("receipt", "verify", RECEIPT, "--verifier-pub", VERIFIER_PUB, "--registry",
                          "example.org:443", "--insecure-loopback", "--json"), 2, "example.org")


def test_registry_commands_name_the_file_and_address(cli: Callable[..., Ran], tmp_path: Path) -> None:
    where = ["--log-copy", GOLDEN / "log-copy.json", "--log-pub", LOG_PUB]
    garbage = tmp_path / "garbage.note"
    garbage.write_text("not a checkpoint")
    # a saved checkpoint that is not one is bad input (2), not a failed audit
    assert_json_error(cli("registry", "audit", "--from", garbage, *where, "--json"), 2, str(garbage))
    assert_json_error(cli("registry", "prove", "0", "--checkpoint", garbage, *where, "--json"), 2, str(garbage))
    r = cli("registry", "prove", "0", "--checkpoint", GOLDEN / "checkpoint-1.note", *where, "--json")
    assert r.code == 0 and r.json()["verified"] is True, r.err
    # a forked history fails the audit: 1 (the audit's report is the JSON on stdout)
    r = cli("registry", "audit", "--from", GOLDEN / "checkpoint-forked.note", *where, "--json")
    assert r.code == 1 and r.json()["ok"] is False
    address = f"127.0.0.1:{free_port()}"
    for args in (("list",), ("show", "0"), ("checkpoint", "-o", str(tmp_path / "cp.note"))):
        r = cli("registry", *args, "--registry", address, "--insecure-loopback", "--timeout", "5", "--json")
        assert_json_error(r, 3, address)


def test_keys_and_trust_json_and_errors(cli: Callable[..., Ran], tmp_path: Path) -> None:
    r = cli("keys", "generate", "-o", tmp_path / "k", "--name", "v", "--role", "vendor", "--json")
    assert r.code == 0, r.err
    made = r.json()
    assert set(made) == {"key_id", "role", "private_key", "public_key"} and made["role"] == "vendor"
    assert Path(made["private_key"]).exists() and Path(made["public_key"]).exists()
    r = cli("keys", "generate", "-o", tmp_path / "k", "--name", "v", "--role", "vendor", "--json")
    assert_json_error(r, 2, made["private_key"])  # not overwriting a key file
    trust = tmp_path / "trust.json"
    r = cli("trust", "add", trust, made["public_key"], "--role", "vendor", "--name", "acme", "--json")
    assert r.code == 0 and r.json() == {"trust": str(trust), "key_id": made["key_id"], "roles": ["vendor"],
                                        "name": "acme"}, r.err
    r = cli("trust", "add", trust, made["public_key"], "--role", "owner", "--name", "other", "--json")
    assert_json_error(r, 2, str(trust), made["key_id"])  # already listed under another name
    assert_json_error(cli("trust", "add", trust, TRUST, "--role", "owner", "--json"), 2, str(TRUST))  # not a key


def test_registry_add_json(cli: Callable[..., Ran], tmp_path: Path) -> None:
    from protocol import Bundle, TrustStore

    data, bundle = tmp_path / "data", GOLDEN / "bundle.bundle"
    signer = Bundle.from_bytes(bundle.read_bytes()).signed.public_key
    # the golden bundle's key is trusted as an owner, not as a vendor: the registry refuses it (1), naming both
    err = assert_json_error(cli("registry", "add", bundle, "--data", data, "--name", "golden-base", "--trust", TRUST,
                                "--json"), 1, str(bundle), signer.key_id, str(TRUST))
    assert err["kind"] == "PermissionDenied"
    vendors = tmp_path / "vendors.json"
    store = TrustStore()
    store.add(signer, "vendor", name="golden vendor")
    store.save(vendors)
    r = cli("registry", "add", bundle, "--data", data, "--name", "golden-base", "--trust", vendors, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["index"] == 0 and out["size"] == 1 and out["name"] == "golden-base" and len(out["root"]) == 64
    assert out["vendor_key_id"] == signer.key_id
    # a bundle whose term was changed is refused, naming the file
    r = cli("registry", "add", GOLDEN / "bundle-tampered.bundle", "--data", data, "--name", "other", "--trust",
            vendors, "--json")
    assert r.code == 1 and str(GOLDEN / "bundle-tampered.bundle") in r.err, r.err


def test_render_json(cli: Callable[..., Ran], tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.random.default_rng(0).standard_normal(512).astype(np.float32))
    r = cli("render", tmp_path / "v.npy", "-o", tmp_path / "dog.png", "--json")
    assert r.code == 0 and r.json()["output"] == str(tmp_path / "dog.png") and r.json()["drawn"] == "vector", r.err
    np.save(tmp_path / "short.npy", np.zeros(3, dtype=np.float32))
    assert_json_error(cli("render", tmp_path / "short.npy", "-o", tmp_path / "x.png", "--json"), 2,
                      str(tmp_path / "short.npy"))


# ------------------------------------------------------------------------------------------------ report
def test_report_refuses_invalid_receipts_unless_allowed(cli: Callable[..., Ran], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    r = cli("report", RECEIPT, "-o", page, "--verifier-pub", VERIFIER_PUB, "--log-pub", LOG_PUB, "--json")
    assert r.code == 0 and page.exists(), r.err
    out = r.json()
    assert out["valid"] is True and out["output"] == str(page)
    assert out["receipts"][0]["signature"]["state"] == "ok" and out["receipts"][0]["failed"] == []
    page.unlink()
    # an edited receipt: exit 1, no page, the file named
    r = cli("report", RECEIPT, TAMPERED_RECEIPT, "-o", page, "--verifier-pub", VERIFIER_PUB, "--json")
    assert_json_error(r, 1, str(TAMPERED_RECEIPT), "--allow-invalid")
    assert not page.exists()
    # signed by another key than the one given: also invalid
    r = cli("report", RECEIPT, "-o", page, "--verifier-pub", LOG_PUB)
    assert r.code == 1 and not page.exists() and "pawprint: error:" in r.err
    # --allow-invalid: the page is written (it marks the receipt), a warning, exit 0
    r = cli("report", RECEIPT, TAMPERED_RECEIPT, "-o", page, "--verifier-pub", VERIFIER_PUB, "--allow-invalid",
            "--json")
    assert r.code == 0 and page.exists() and "pawprint: warning:" in r.err and str(TAMPERED_RECEIPT) in r.err
    out = r.json()
    assert out["valid"] is False and [x["failed"] for x in out["receipts"]] == [[], ["signature"]]
    assert "INVALID" in page.read_text()
    # without a key nothing is invalid, only unchecked
    page.unlink()
    r = cli("report", RECEIPT, "-o", page)
    assert r.code == 0 and page.exists(), r.err
    # not a receipt: bad input (2)
    assert_json_error(cli("report", TRUST, "-o", page, "--json"), 2, str(TRUST))


# ------------------------------------------------------------------------------------------ verifier health
@pytest.fixture()
def running(tmp_path: Path) -> Iterator[Any]:
    from protocol import PrivateKey, TrustStore
    from verifier import Registry, ServerConfig, VerifierService, start

    registry = Registry(tmp_path / "data")
    service = VerifierService(PrivateKey.from_seed(b"\x07" * 32), TrustStore(), registry,
                              ServerConfig(insecure_loopback=True))
    server = start(service)
    try:
        yield server
    finally:
        server.server.stop(None)
        registry.close()


def test_health_serving_not_serving_and_unreachable(cli: Callable[..., Ran], running: Any) -> None:
    from grpc_health.v1 import health_pb2

    address = f"127.0.0.1:{running.port}"
    r = cli("verifier", "health", address, "--insecure-loopback")
    assert r.code == 0 and r.out.startswith(f"{address}: SERVING"), (r.out, r.err)
    r = cli("verifier", "health", address, "--insecure-loopback", "--json")
    assert r.code == 0, r.err
    assert r.json() == {"address": address, "serving": True, "status": "SERVING",
                        "services": {"": "SERVING", "pawprint.v1.Verifier": "SERVING",
                                     "pawprint.v1.Registry": "SERVING"}}
    r = cli("verifier", "health", address, "--insecure-loopback", "--service", "no.such.Service", "--json")
    assert r.code == 1 and r.json()["services"] == {"no.such.Service": "SERVICE_UNKNOWN"}
    running.health.set("pawprint.v1.Registry", health_pb2.HealthCheckResponse.NOT_SERVING)
    r = cli("verifier", "health", address, "--insecure-loopback", "--json")
    assert r.code == 1 and r.json()["status"] == "NOT_SERVING", r.out
    assert r.json()["services"]["pawprint.v1.Registry"] == "NOT_SERVING"
    r = cli("verifier", "health", address, "--insecure-loopback")
    assert r.code == 1 and "NOT_SERVING" in r.out
    running.health.enter_graceful_shutdown()  # what a draining verifier says
    r = cli("verifier", "health", address, "--insecure-loopback", "--service", "", "--json")
    assert r.code == 1 and r.json()["services"] == {"": "NOT_SERVING"}
    running.server.stop(None)
    err = assert_json_error(cli("verifier", "health", address, "--insecure-loopback", "--timeout", "3", "--json"), 3,
                            address)
    assert err["kind"] == "Unavailable"


def test_health_service_names_are_the_verifiers() -> None:
    from pawprint.cli_verifier import HEALTH_SERVICES
    from verifier import REGISTRY_SERVICE_NAME, SERVICE_NAME

    assert HEALTH_SERVICES == ("", SERVICE_NAME, REGISTRY_SERVICE_NAME)


# ------------------------------------------------------------------------------------------------- owner
def test_owner_json_and_an_unreachable_verifier(tiny_model: Callable[..., Path], cli: Callable[..., Ran],
                                                tmp_path: Path) -> None:
    model = tiny_model("llama")
    r = cli("owner", "invariants", model, "-o", tmp_path / "a.inv", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["output"] == str(tmp_path / "a.inv") and out["layers"] == [1, 2] and out["terms"] == 6
    assert out["method"] == "pawprint" and 0 < out["present"] <= out["tokens"]
    keys = cli("keys", "generate", "-o", tmp_path / "k", "--name", "o", "--role", "owner", "--json").json()
    r = cli("owner", "fingerprint", model, "-k", keys["private_key"], "-o", tmp_path / "a.bundle", "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["output"] == str(tmp_path / "a.bundle") and out["key_id"] == keys["key_id"]
    assert len(out["manifest_sha256"]) == 64 and out["tensors"] == 6 and out["groups"][0]["layers"] == [1, 2]
    # nothing listening at the verifier: 3, naming the address
    address = f"127.0.0.1:{free_port()}"
    r = cli("owner", "submit", model, "--verifier", address, "-k", keys["private_key"], "--verifier-pub",
            VERIFIER_PUB, "--insecure-loopback", "-o", tmp_path / "out", "--retries", "0", "--timeout", "5", "--json")
    assert assert_json_error(r, 3, address)["kind"] == "SubmissionError"
    # a key file that is not one: 2, named
    r = cli("owner", "fingerprint", model, "-k", TRUST, "-o", tmp_path / "b.bundle", "--json")
    assert_json_error(r, 2, str(TRUST))


def test_the_console_script_exits_with_the_status(tmp_path: Path) -> None:
    """Through the real entry point (``python -m pawprint``): the status is the process's exit status."""
    r = subprocess.run([sys.executable, "-m", "pawprint", "receipt", "verify", str(TAMPERED_RECEIPT),
                        "--verifier-pub", str(VERIFIER_PUB), "--json"], capture_output=True, text=True, timeout=120,
                       cwd=REPO)
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == 1, r.stderr
