"""The protocol end to end over real sockets on 127.0.0.1, with TLS and with mutual TLS.

A model derived from a registered base (every weight perturbed) is matched to it; an independent one (another
seed, same family and tokenizer) is not; the receipts verify offline with ``protocol`` alone. The last test
drives the whole exchange through the command line: keys, trust store, bundle, registry, a verifier process,
submissions and receipt checks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from owner._client import SubmissionError, submit
from protocol import (
    RECEIPT_FORMAT,
    Bundle,
    PrivateKey,
    SignatureError,
    SignedMessage,
    open_receipt,
    parse_score,
)
from protocol.wire import ChannelError, open_channel
from tests.verifier import cli
from tests.verifier.fixtures import Keys, Models
from verifier import (
    LoopbackPki,
    Registry,
    ServerConfig,
    TlsConfig,
    load_null,
    recheck_verdict,
    serve,
    write_test_pki,
)
from verifier._pictures import redraw

pytest_plugins = ["tests.verifier.fixtures"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPki:
    return write_test_pki(tmp_path_factory.mktemp("pki"), now=dt.datetime.now(dt.UTC))


def _start(data: Path, keys: Keys, bundle: Bundle, tls: TlsConfig) -> tuple[object, int, Registry]:
    registry = Registry(data)
    trust = keys.trust()
    registry.add_base("llama-base", bundle, trust)
    server, port = serve(keys.verifier, trust, registry, ServerConfig(listen="127.0.0.1:0", tls=tls))
    return server, port, registry


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, keys: Keys, base_bundle: Bundle,
               pki: LoopbackPki) -> Iterator[tuple[int, Registry]]:
    server, port, registry = _start(tmp_path_factory.mktemp("tls"), keys, base_bundle,
                                    TlsConfig.from_files(pki.server_cert, pki.server_key))
    yield port, registry
    server.stop(None)  # type: ignore[attr-defined]
    registry.close()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, keys: Keys, base_bundle: Bundle,
                pki: LoopbackPki) -> Iterator[tuple[int, Registry]]:
    server, port, registry = _start(tmp_path_factory.mktemp("mtls"), keys, base_bundle,
                                    TlsConfig.from_files(pki.server_cert, pki.server_key, pki.ca))
    yield port, registry
    server.stop(None)  # type: ignore[attr-defined]
    registry.close()


def _check_offline(signed: SignedMessage, keys: Keys) -> None:
    """What an auditor does with a receipt file: parse, check the signature and re-derive the verdict."""
    again = SignedMessage.from_bytes(signed.to_bytes(RECEIPT_FORMAT), RECEIPT_FORMAT)
    receipt = open_receipt(again, keys.verifier.public_key)
    # the shipped null the receipt names (the sketch null: a default verifier asks for sketches)
    assert receipt.null_id == load_null(null_id=receipt.null_id).null_id != load_null().null_id
    assert recheck_verdict(receipt.matches, receipt.verdict, receipt.verdict_rule, load_null(null_id=receipt.null_id),
                           receipt.null_id, compared=receipt.compared) is True
    # the pictures: each redraws from its vector to exactly the PNG its digest names
    assert receipt.picture is not None and all(m.picture is not None for m in receipt.matches)
    for picture in [receipt.picture, *(m.picture for m in receipt.matches)]:
        assert picture is not None
        assert redraw(picture).startswith(b"\x89PNG")
    with pytest.raises(SignatureError):
        open_receipt(again, keys.owner.public_key)


def test_tls_derived_is_matched_independent_is_not(tls_server: tuple[int, Registry], keys: Keys, models: Models,
                                                   pki: LoopbackPki) -> None:
    port, registry = tls_server
    with open_channel(f"127.0.0.1:{port}", ca=pki.ca.read_bytes()) as channel:
        derived = submit(models.derived, keys.owner, channel, keys.verifier.public_key, timeout_s=60)
        independent = submit(models.independent, keys.owner, channel, keys.verifier.public_key, timeout_s=60)

    assert derived.receipt.verdict == "derived"
    [match] = derived.receipt.matches
    assert match.name == "llama-base" and match.verdict == "derived"
    assert parse_score(match.ics) > 0.9 and parse_score(match.min_term) > 0.9
    assert {(t.layer, t.base_layer, t.term) for t in match.terms} == {
        (la, la, term) for la in (1, 2) for term in ("attn_qk", "attn_vo", "ffn")
    }
    # a sketching verifier states no scores for an independent match (issue 16): the base is counted, not listed
    assert independent.receipt.verdict == "independent"
    assert independent.receipt.compared == 1 and independent.receipt.matches == ()

    for result in (derived, independent):
        assert result.receipt.registry == registry.state()
        assert result.receipt.kept_invariants is False
        _check_offline(result.signed_receipt, keys)
    assert registry.counts() == {"bases": 1, "submissions": 2, "blobs": 1}  # no suspect's terms kept


def test_owner_may_ask_the_verifier_to_keep_its_terms(tls_server: tuple[int, Registry], keys: Keys,
                                                     models: Models, pki: LoopbackPki) -> None:
    port, registry = tls_server
    before = registry.counts()
    with open_channel(f"127.0.0.1:{port}", ca=pki.ca.read_bytes()) as channel:
        result = submit(models.derived, keys.owner, channel, keys.verifier.public_key, keep_invariants=True,
                        timeout_s=60)
    assert result.receipt.kept_invariants is True
    assert registry.counts()["blobs"] == before["blobs"] + 1


def test_client_refuses_a_verifier_with_another_key(tls_server: tuple[int, Registry], keys: Keys, models: Models,
                                                   pki: LoopbackPki) -> None:
    port, _ = tls_server
    impostor = PrivateKey.from_seed(b"\x09" * 32).public_key
    with open_channel(f"127.0.0.1:{port}", ca=pki.ca.read_bytes()) as channel, \
            pytest.raises(SubmissionError, match="expected verifier key"):
        submit(models.derived, keys.owner, channel, impostor, timeout_s=60)


def test_mutual_tls(mtls_server: tuple[int, Registry], keys: Keys, models: Models, pki: LoopbackPki) -> None:
    port, registry = mtls_server
    target = f"127.0.0.1:{port}"
    with open_channel(target, ca=pki.ca.read_bytes(), cert=pki.client_cert.read_bytes(),
                      key=pki.client_key.read_bytes()) as channel:
        derived = submit(models.derived, keys.owner, channel, keys.verifier.public_key, timeout_s=60)
        independent = submit(models.independent, keys.owner, channel, keys.verifier.public_key, timeout_s=60)
    assert derived.receipt.verdict == "derived" and derived.receipt.matches[0].name == "llama-base"
    assert independent.receipt.verdict == "independent"
    _check_offline(derived.signed_receipt, keys)

    before = registry.counts()
    with open_channel(target, ca=pki.ca.read_bytes()) as channel, pytest.raises(SubmissionError) as info:
        submit(models.derived, keys.owner, channel, keys.verifier.public_key, timeout_s=10)
    assert info.value.code == "UNAVAILABLE"  # no client certificate: the handshake fails
    assert registry.counts() == before


def test_plaintext_only_on_loopback_and_only_when_asked() -> None:
    from verifier import ConfigError

    with pytest.raises(ConfigError, match="insecure-loopback"):
        ServerConfig(listen="127.0.0.1:0").check()
    with pytest.raises(ConfigError, match="only on 127"):
        ServerConfig(listen="0.0.0.0:0", insecure_loopback=True).check()
    ServerConfig(listen="[::1]:0", insecure_loopback=True).check()
    with pytest.raises(ChannelError, match="only to 127"):
        open_channel("example.org:443", insecure_loopback=True)


# ------------------------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def _cli(*args: str, check: bool = True) -> Run:
    """One ``pawprint`` command, in this process (the server alone runs as its own process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    r = Run(code, out.getvalue(), err.getvalue())
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_command_line_end_to_end(tmp_path: Path, models: Models) -> None:
    k, trust, data = tmp_path / "keys", tmp_path / "trust.json", tmp_path / "data"
    for name, role in (("vendor", "vendor"), ("owner", "owner"), ("verifier", "verifier")):
        _cli("keys", "generate", "-o", str(k), "--name", name, "--role", role)
        _cli("trust", "add", str(trust), str(k / f"{name}.pub"), "--role", role)
    bundle = tmp_path / "base.bundle"
    _cli("owner", "fingerprint", str(models.base), "-k", str(k / "vendor.key"), "-o", str(bundle), "-q")
    out = json.loads(_cli("bundle", "verify", str(bundle), "--trust", str(trust), "--json").stdout)
    assert out["valid"] and out["key_roles"] == ["vendor"]
    # An owner's key may not register a base.
    owner_bundle = tmp_path / "owner.bundle"
    _cli("owner", "fingerprint", str(models.base), "-k", str(k / "owner.key"), "-o", str(owner_bundle), "-q")
    r = _cli("registry", "add", str(owner_bundle), "--data", str(data), "--name", "x", "--trust", str(trust),
             check=False)
    # exit 1: the bundle is well formed but its key is not trusted as a vendor (2 before exit statuses had meanings)
    assert r.returncode == 1 and r.stderr.startswith("pawprint: error:")
    _cli("registry", "add", str(bundle), "--data", str(data), "--name", "llama-base", "--trust", str(trust))

    certs = tmp_path / "certs"
    _cli("verifier", "test-certs", "-o", str(certs))
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.verifier.cli", "verifier", "serve", "--data", str(data), "--listen",
         "127.0.0.1:0", "--key", str(k / "verifier.key"), "--trust", str(trust), "--tls-cert",
         str(certs / "server.pem"), "--tls-key", str(certs / "server.key"), "--client-ca", str(certs / "ca.pem"),
         "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:"), (line, server.stderr.read() if server.stderr else "")
        target = line.removeprefix("listening on ")
        port = int(target.rpartition(":")[2])
        assert port > 0
        tls = ["--ca", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"), "--key", str(certs / "client.key")]
        receipts = tmp_path / "receipts"
        results = {}
        for label, model in (("derived", models.derived), ("independent", models.independent)):
            r = _cli("owner", "submit", str(model), "--verifier", target, "-k", str(k / "owner.key"),
                     "--verifier-pub", str(k / "verifier.pub"), *tls, "-o", str(receipts / label), "--json")
            results[label] = json.loads(r.stdout)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode == 0
    assert results["derived"]["verdict"] == "derived"
    assert results["derived"]["matches"][0]["name"] == "llama-base"
    assert results["derived"]["matches"][0]["ics"] > 0.9
    assert results["independent"]["verdict"] == "independent"
    # the base was compared, and no score is stated for an independent match (a sketching verifier, the default)
    assert results["independent"]["compared"] == 1 and results["independent"]["matches"] == []

    receipt = Path(results["derived"]["receipt"])
    checked = json.loads(_cli("receipt", "verify", str(receipt), "--verifier-pub", str(k / "verifier.pub"),
                              "--json").stdout)
    assert checked["valid"] and checked["verdict"] == "derived" and checked["verdict_rechecked"] is True
    r = _cli("receipt", "verify", str(receipt), "--verifier-pub", str(k / "owner.pub"), check=False)
    assert r.returncode == 1 and "signature verification failed" in r.stderr  # does not verify (was 2)
    tampered = tmp_path / "tampered.receipt"
    data_bytes = bytearray(receipt.read_bytes())
    data_bytes[len(data_bytes) // 3] ^= 1
    tampered.write_bytes(bytes(data_bytes))
    assert _cli("receipt", "verify", str(tampered), "--verifier-pub", str(k / "verifier.pub"),
                check=False).returncode == 1  # a changed byte: the signature does not verify (was 2)
