"""A full default submission (2 layers x 3 terms, n = 4096, fp32: 384 MiB) streamed over loopback TLS.

    python -m benchmarks.perf.transfer

The verifier runs as its own process (``--serve``: ``verifier.serve`` with TLS from ``write_test_pki``) so that
its memory can be read from outside: its resident set after start-up, and its peak (``VmHWM``, reset through
``/proc/PID/clear_refs`` just before each submission) while it receives, checks, compares and signs. The owner
side (this process) asks for a challenge, signs a manifest for synthetic terms (random fp32, the sizes a real
default submission has), streams them with ``owner._client.submission_requests`` in the challenge's chunk size,
and checks the receipt. Two registries: empty (transfer and checks only) and holding one base on the same
probe set (the comparison too). ``--repeats`` submissions each; MB/s is payload bytes over the Submit call's
wall time. For comparison, the same submission handed to ``VerifierService.submit`` in this process, without
gRPC or TLS.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.perf._common import MIB, OUT, RESULTS, loadavg, machine, machine_line, median, write_json

N = 4096
LAYERS = (20, 21)
TERMS = ("attn_qk", "attn_vo", "ffn")
SEEDS = {"vendor": b"\x31" * 32, "owner": b"\x32" * 32, "verifier": b"\x33" * 32}
NOW = 1_700_000_000


def _keys() -> dict[str, Any]:
    from protocol import PrivateKey

    return {k: PrivateKey.from_seed(v) for k, v in SEEDS.items()}


def _trust() -> Any:
    from protocol import Role, TrustStore

    k = _keys()
    store = TrustStore()
    store.add(k["vendor"].public_key, Role.VENDOR, name="vendor")
    store.add(k["owner"].public_key, Role.OWNER, name="owner")
    store.add(k["verifier"].public_key, Role.VERIFIER, name="verifier")
    return store


def probe_spec() -> Any:
    from protocol import ProbeSpec

    return ProbeSpec("perf-synthetic", 1, "synthetic", tuple(f"▁tok{i:05d}" for i in range(N)))


def synthetic_terms(seed: int) -> tuple[Any, dict[str, Any], list[Any]]:
    """A group, its term tensors and their table entries, as ``owner._fingerprint.fingerprint`` would give."""
    from owner._invariants import METHOD_IDS
    from protocol import TensorDigest, TermGroup, tensor_name
    from protocol.terms import term_tensor

    group = TermGroup(probe_spec(), (True,) * N, LAYERS, "pawprint", METHOD_IDS["pawprint"], TERMS)
    rng = np.random.default_rng(seed)
    terms = {tensor_name(0, layer, t): term_tensor(rng.standard_normal((N, N), dtype=np.float32))
             for layer in LAYERS for t in TERMS}
    table = [TensorDigest(name, t.dtype, t.shape, hashlib.sha256(t.data).digest()) for name, t in terms.items()]
    return group, terms, table


def manifest(key: Any, nonce: bytes | None, group: Any, table: list[Any]) -> Any:
    from protocol import Manifest, WeightCommitment

    return Manifest(key.key_id, nonce, NOW, "perf", {"family": "llama", "n_layers": 22}, (group,), tuple(table),
                    WeightCommitment(hashlib.sha256(b"perf").digest(), 201, 2_200_000_000))


def make_registry(data: Path, with_base: bool) -> None:
    from protocol import Bundle
    from verifier import Registry

    shutil.rmtree(data, ignore_errors=True)
    registry = Registry(data)
    if with_base:
        group, terms, table = synthetic_terms(seed=1)
        vendor = _keys()["vendor"]
        registry.add_base("perf-base", Bundle.create(manifest(vendor, None, group, table), terms, vendor), _trust())
    registry.close()


# ------------------------------------------------------------------------------------------- server side
def server_config(**kw: Any) -> Any:
    """The default ``ServerConfig``; where this checkout's verifier wants a measured null that is not shipped
    yet, a stand-in fitted to synthetic independent scores (it changes verdicts, not the cost measured here)."""
    import dataclasses

    from verifier import ServerConfig

    if "null_path" in {f.name for f in dataclasses.fields(ServerConfig)}:
        from verifier import _calibration

        if not _calibration.DEFAULT_NULL_FILE.is_file():
            from owner._invariants import METHOD_IDS

            rng = np.random.default_rng(0)
            pairs = [[(t, float(rng.normal(0.0, 0.05))) for t in TERMS for _ in LAYERS] for _ in range(8)]
            null = _calibration.fit_null(pairs, METHOD_IDS["pawprint"], "synthetic", "perf stand-in")
            path = OUT / "transfer-null.json"
            path.write_text(null.to_json())
            kw["null_path"] = str(path)
    return ServerConfig(**kw)


def serve(data: Path, pki_dir: Path) -> int:
    from verifier import Registry, TlsConfig
    from verifier import serve as start

    registry = Registry(data)
    tls = TlsConfig.from_files(pki_dir / "server.pem", pki_dir / "server.key")
    server, port = start(_keys()["verifier"], _trust(), registry, server_config(listen="127.0.0.1:0", tls=tls))
    print(json.dumps({"port": port}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(None)
    registry.close()
    return 0


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out


# ------------------------------------------------------------------------------------------- owner side
def submit_once(target: str, ca: bytes, group: Any, terms: dict[str, Any], table: list[Any]) -> dict[str, Any]:
    from owner._client import check_receipt, request_challenge, submission_requests
    from protocol import ONLINE_MANIFEST_KIND, PublicKey, SignedMessage, sign_message
    from protocol._pb import pawprint_pb2_grpc
    from protocol.wire import open_channel

    k = _keys()
    with open_channel(target, ca=ca) as channel:
        stub = pawprint_pb2_grpc.VerifierStub(channel)
        challenge = request_challenge(stub, k["verifier"].public_key, k["owner"].key_id, 60)
        m = manifest(k["owner"], challenge.nonce, group, table)
        signed = sign_message(m, k["owner"], ONLINE_MANIFEST_KIND)
        requests = submission_requests(signed, m, terms, challenge.limits.max_chunk_bytes)
        t0 = time.perf_counter()
        reply = stub.Submit(requests, timeout=600)
        wall = time.perf_counter() - t0
    receipt = check_receipt(
        SignedMessage(bytes(reply.payload), bytes(reply.signature), PublicKey(bytes(reply.public_key))),
        k["verifier"].public_key, signed, m, challenge)
    return {"wall_s": wall, "verdict": receipt.verdict, "compared": receipt.compared,
            "chunk_bytes": challenge.limits.max_chunk_bytes}


def scenario(name: str, with_base: bool, repeats: int, pki: Any) -> dict[str, Any]:
    data = OUT / f"transfer-{name}"
    make_registry(data, with_base)
    cmd = [sys.executable, "-m", "benchmarks.perf.transfer", "--serve", str(data), str(pki.ca.parent)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = json.loads(proc.stdout.readline())["port"]
        group, terms, table = synthetic_terms(seed=2)
        payload = sum(len(t.data) for t in terms.values())
        started = _status(proc.pid)
        runs = []
        for _ in range(repeats):
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            before = _status(proc.pid)
            peak_anon = [before["RssAnon"]]
            done = threading.Event()

            def sample(pid: int = proc.pid, peak: list[int] = peak_anon, stop: threading.Event = done) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _status(pid)["RssAnon"])
                    stop.wait(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            r = submit_once(f"127.0.0.1:{port}", pki.ca.read_bytes(), group, terms, table)
            done.set()
            sampler.join()
            after = _status(proc.pid)
            r.update({"server_rss_before": before["VmRSS"], "server_peak": after["VmHWM"],
                      "server_peak_anon": peak_anon[0], "server_rss_after": after["VmRSS"],
                      "MBps": payload / r["wall_s"] / 1e6, "loadavg": loadavg()})
            print(f"  {name:9s} {r['wall_s']:6.2f} s  {r['MBps']:6.1f} MB/s  "
                  f"server peak {r['server_peak'] / MIB:6.0f} MiB "
                  f"(before {before['VmRSS'] / MIB:.0f}, peak anon {peak_anon[0] / MIB:.0f}) verdict {r['verdict']}  "
                  f"load {loadavg()[0]:.2f}", flush=True)
            runs.append(r)
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=60)
    return {
        "payload_bytes": payload,
        "server_started_rss": started["VmRSS"],
        "runs": runs,
        "wall_s_median": median([r["wall_s"] for r in runs]),
        "MBps_median": median([r["MBps"] for r in runs]),
        "server_peak_median": median([r["server_peak"] for r in runs]),
        "server_peak_over_before_median": median([r["server_peak"] - r["server_rss_before"] for r in runs]),
    }


def in_process(repeats: int) -> dict[str, Any]:
    """The same submission given to ``VerifierService.submit`` directly: checks, comparison and signing without
    gRPC, TLS or a second process."""
    from protocol import ONLINE_MANIFEST_KIND, sign_message
    from verifier import Registry, VerifierService
    from verifier._service import Chunk

    data = OUT / "transfer-inproc"
    make_registry(data, with_base=False)
    registry = Registry(data)
    k = _keys()
    service = VerifierService(k["verifier"], _trust(), registry, server_config(insecure_loopback=True))
    group, terms, table = synthetic_terms(seed=2)
    times = []
    for _ in range(repeats):
        challenge = service.challenges.issue(
            verifier_key_id=k["verifier"].key_id, probe_sets=registry.probe_sets(), layers="last2",
            method="pawprint", limits=service.config.limits, registry=registry.state())
        m = manifest(k["owner"], challenge.nonce, group, table)
        signed = sign_message(m, k["owner"], ONLINE_MANIFEST_KIND)
        step = challenge.limits.max_chunk_bytes

        def chunks(m: Any = m, step: int = step) -> Any:
            for i, entry in enumerate(m.tensors):
                data = memoryview(terms[entry.name].data)
                for off in range(0, len(data), step):
                    yield Chunk(i, off, bytes(data[off : off + step]))

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        service.submit(signed, chunks())
        prof.disable()
        times.append(time.perf_counter() - t0)
    registry.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
    return {"times_s": times, "wall_s_median": median(times), "profile_last": out.getvalue()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--serve", nargs=2, type=Path, metavar=("DATA", "PKI"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(*args.serve)
    from verifier import write_test_pki

    t0 = time.perf_counter()
    m = machine()
    print(machine_line(m))
    pki = write_test_pki(OUT / "transfer-pki", now=dt.datetime.now(dt.UTC))
    doc: dict[str, Any] = {"n": N, "layers": list(LAYERS), "loadavg_start": loadavg()}
    doc["empty_registry"] = scenario("empty", False, args.repeats, pki)
    doc["one_base"] = scenario("one-base", True, args.repeats, pki)
    doc["in_process_empty"] = in_process(args.repeats)
    doc["loadavg_end"] = loadavg()
    doc["machine"] = m
    doc["command"] = " ".join(["python -m benchmarks.perf.transfer", *sys.argv[1:]])
    doc["seconds"] = time.perf_counter() - t0
    for name in ("transfer-empty", "transfer-one-base", "transfer-inproc"):
        shutil.rmtree(OUT / name, ignore_errors=True)
    write_json(args.out or RESULTS / "perf_transfer.json", doc)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "runs"} if isinstance(v, dict) else v
                      for k, v in doc.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
