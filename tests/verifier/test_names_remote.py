"""Namespace claims over gRPC (issue 17, item 4): ``pawprint registry claim NAMESPACE --registry HOST:PORT``
sends the claim through the Revoke RPC to a real in-process verifier; afterwards a vendor key not bound to the
namespace cannot publish under it (PERMISSION_DENIED; exit code 2 from the CLI), while the claiming key can,
and a second claim by another key is refused."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protocol import CLAIM, NO_MANIFEST, PrivateKey, RegistryStatement
from protocol.wire import RegistryClientError, RemoteRegistry
from tests.verifier import cli
from tests.verifier.registry_kit import LOG_KEY, NOW, OTHER_VENDOR, VENDOR, register, tiny_bundle, trust
from verifier import Registry, ServerConfig, VerifierService, create_server

VERIFIER = PrivateKey.from_seed(b"\x17" * 32)


@contextlib.contextmanager
def serving(data: Path) -> Iterator[str]:
    registry = Registry(data, log_key=LOG_KEY, clock=lambda: NOW)
    server, port = create_server(VerifierService(VERIFIER, trust(), registry, ServerConfig(insecure_loopback=True)))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)
        registry.close()


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except RegistryClientError as e:
        return grpc.StatusCode[e.code]
    return grpc.StatusCode.OK


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    VENDOR.save(tmp_path / "vendor.key")
    OTHER_VENDOR.save(tmp_path / "other.key")
    LOG_KEY.public_key.save(tmp_path / "log.pub")
    for seed, key, name in ((1, VENDOR, "vendor"), (2, OTHER_VENDOR, "other"), (3, OTHER_VENDOR, "free")):
        (tmp_path / f"{name}.bundle").write_bytes(tiny_bundle(seed, key).to_bytes())
    return tmp_path


def test_a_namespace_claimed_over_grpc_binds_publishing_to_the_claiming_key(keys: Path) -> None:
    with serving(keys / "data") as target:
        net = ("--registry", target, "--insecure-loopback", "--log-pub", str(keys / "log.pub"))
        code, out, err = run("registry", "claim", "acme/", "-k", str(keys / "vendor.key"), *net, "--json")
        assert code == 0, err
        claimed = json.loads(out)
        assert claimed["namespace"] == "acme/" and claimed["index"] == 0 and not claimed["existing"]
        assert claimed["vendor_key_id"] == VENDOR.key_id and claimed["checkpoint_signature"] == "verified"
        # Claiming again with the same key answers with the claim already in the log.
        code, out, err = run("registry", "claim", "acme", "-k", str(keys / "vendor.key"), *net)
        assert code == 0 and "entry 0 (already in the log)" in out, err

        # An unbound key: refused over the CLI (a peer's refusal is exit 2, pawprint/_common.py) and the RPC.
        code, out, err = run("registry", "publish", str(keys / "other.bundle"), "-k", str(keys / "other.key"),
                             "--name", "acme/squat", *net)
        assert code == 2 and "PERMISSION_DENIED" in err and "is claimed (entry 0)" in err, (code, err)
        other = tiny_bundle(2, OTHER_VENDOR)
        remote = RemoteRegistry(grpc.insecure_channel(target), timeout_s=30)
        assert code_of(lambda: remote.publish(register(other, "acme/squat", OTHER_VENDOR), other)) \
            == grpc.StatusCode.PERMISSION_DENIED
        # Nor can it take the namespace over with a claim of its own.
        steal = RegistryStatement(CLAIM, "acme", OTHER_VENDOR.key_id, NO_MANIFEST, NOW).sign(OTHER_VENDOR)
        assert code_of(lambda: remote.revoke(steal)) == grpc.StatusCode.ALREADY_EXISTS

        # The bound key publishes under it; the other key still publishes outside it.
        code, out, err = run("registry", "publish", str(keys / "vendor.bundle"), "-k", str(keys / "vendor.key"),
                             "--name", "acme/base", *net, "--json")
        assert code == 0, err
        assert json.loads(out)["index"] == 1
        code, out, err = run("registry", "publish", str(keys / "free.bundle"), "-k", str(keys / "other.key"),
                             "--name", "elsewhere/base", *net)
        assert code == 0, err

        code, out, err = run("registry", "list", *net, "--json")
        assert code == 0, err
        entries = json.loads(out)["entries"]
        assert [(e["action"], e["name"]) for e in entries] == [(CLAIM, "acme"), ("register", "acme/base"),
                                                             ("register", "elsewhere/base")]
