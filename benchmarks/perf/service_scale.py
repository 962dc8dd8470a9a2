"""The verifier itself against a large registry: publishing N bases, starting up on them, and answering a
submission through ``VerifierService.submit`` (the screen, then exact comparison of the candidates).

    python -m benchmarks.perf.service_scale --bases 10000

``registry_scale`` measures the screen at the real probe count (n = 4096) on sketches alone. This one runs the
service's own path on a real registry (log, blobs, sketches table) so that what scales with the number of bases
shows: publishing (log append, name checks, the sketch), start-up (the log replayed and checked, every blob
hashed), the first submission (every base's sketch read into the screen) and the next ones. To keep N bases on
disk the bases are small (n = ``--tokens`` probe tokens, two layers; random low-rank terms). The suspect is one
base's terms with noise (ICS about 0.9 with it). The registry is built once under ``out/perf/`` and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.perf._common import OUT, RESULTS, loadavg, machine, machine_line, write_json

LAYERS = (0, 1)
TERMS = ("attn_qk", "attn_vo", "ffn")
NOW = 1_700_000_000


def _keys() -> tuple[Any, Any, Any, Any]:
    from protocol import PrivateKey, Role, TrustStore

    vendor, owner, verifier = (PrivateKey.from_seed(bytes([i]) * 32) for i in (71, 72, 73))
    trust = TrustStore()
    trust.add(vendor.public_key, Role.VENDOR, name="vendor")
    trust.add(owner.public_key, Role.OWNER, name="owner")
    trust.add(verifier.public_key, Role.VERIFIER, name="verifier")
    return vendor, owner, verifier, trust


def _group(n: int) -> Any:
    from owner._invariants import METHOD_IDS
    from protocol import ProbeSpec, TermGroup

    probe = ProbeSpec("service-scale", 1, "synthetic", tuple(f"▁tok{i:05d}" for i in range(n)))
    return TermGroup(probe, (True,) * n, LAYERS, "pawprint", METHOD_IDS["pawprint"], TERMS)


def _arrays(group: Any, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in group.tensor_names(0):
        u, v = rng.standard_normal((n, 4)), rng.standard_normal((n, 4))
        out[name] = (u @ v.T + 0.3 * rng.standard_normal((n, n))).astype("<f4")
    return out


def _manifest(group: Any, n: int, arrays: dict[str, np.ndarray], key: Any, seed: int,
              nonce: bytes | None = None) -> tuple[Any, dict[str, Any]]:
    from protocol import Manifest, Tensor, TensorDigest, WeightCommitment

    terms = {k: Tensor("F32", (n, n), a.tobytes()) for k, a in arrays.items()}
    table = tuple(TensorDigest(k, "F32", (n, n), hashlib.sha256(t.data).digest()) for k, t in terms.items())
    manifest = Manifest(key.key_id, nonce, NOW, "service-scale", {"family": "synthetic"}, (group,), table,
                        WeightCommitment(hashlib.sha256(b"w%d" % seed).digest(), 1, 16, "w"))
    return manifest, terms


def run(n_bases: int, n: int, submissions: int) -> dict[str, Any]:
    from protocol import Bundle, open_challenge, open_receipt, sign_message
    from verifier import Chunk, Registry, ServerConfig, VerifierService

    vendor, owner, verifier, trust = _keys()
    group = _group(n)
    data = OUT / f"service-scale-{n_bases}x{n}"
    result: dict[str, Any] = {"bases": n_bases, "tokens": n}
    if not (data / "registry.sqlite3").is_file():
        registry = Registry(data)
        started, laps = time.perf_counter(), []
        for i in range(n_bases):
            manifest, terms = _manifest(group, n, _arrays(group, n, i), vendor, i)
            registry.add_base(f"base-{i:05d}", Bundle.create(manifest, terms, vendor), trust)
            if (i + 1) % 1000 == 0 or i + 1 == n_bases:
                laps.append((i + 1, time.perf_counter() - started))
                print(f"  published {i + 1:6d} bases, {laps[-1][1]:7.1f} s", flush=True)
        registry.close()
        result["publish_s"] = laps[-1][1]
        result["publish_laps"] = laps
    else:
        print(f"  reusing {data}")
    t = time.perf_counter()
    registry = Registry(data)
    result["startup_registry_s"] = time.perf_counter() - t
    t = time.perf_counter()
    service = VerifierService(verifier, trust, registry, ServerConfig(insecure_loopback=True))
    result["startup_service_s"] = time.perf_counter() - t
    true_index = n_bases // 2
    rng = np.random.default_rng(12345)
    base = _arrays(group, n, true_index)
    suspect = {k: (a + 0.5 * a.std() * rng.standard_normal(a.shape)).astype("<f4") for k, a in base.items()}
    runs: list[dict[str, Any]] = []
    screen_rule = None
    for _ in range(submissions):
        t = time.perf_counter()
        challenge = open_challenge(service.challenge(), verifier.public_key)
        challenge_s = time.perf_counter() - t
        manifest, terms = _manifest(group, n, suspect, owner, 999_999, nonce=challenge.nonce)
        signed = sign_message(manifest, owner, "manifest")
        chunks = [Chunk(i, 0, terms[e.name].data) for i, e in enumerate(manifest.tensors)]
        t = time.perf_counter()
        receipt = open_receipt(service.submit(signed, chunks), verifier.public_key)
        submit_s = time.perf_counter() - t
        names = [m.name for m in receipt.matches]
        screen_rule = receipt.screen_rule
        runs.append({"challenge_s": challenge_s, "submit_s": submit_s, "screened": receipt.screened,
                     "compared": receipt.compared, "verdict": receipt.verdict,
                     "true_base_rank": names.index(f"base-{true_index:05d}") + 1
                     if f"base-{true_index:05d}" in names else None,
                     "top_ics": receipt.matches[0].ics if receipt.matches else None})
        print(f"  submission: challenge {challenge_s * 1e3:.1f} ms, submit {submit_s:.2f} s, screened "
              f"{receipt.screened}, compared {receipt.compared}, true base rank {runs[-1]['true_base_rank']}, "
              f"verdict {receipt.verdict}", flush=True)
    registry.close()
    result["submissions"] = runs
    result["screen_rule"] = screen_rule
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bases", type=int, default=10_000)
    ap.add_argument("--tokens", type=int, default=32, help="probe tokens per base (keeps N bases small on disk)")
    ap.add_argument("--submissions", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "perf_service_scale.json")
    args = ap.parse_args(argv)
    m = machine()
    print(machine_line(m))
    load_start = loadavg()
    started = time.perf_counter()
    result = run(args.bases, args.tokens, args.submissions)
    doc = {"command": "python -m benchmarks.perf.service_scale " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": m, "loadavg_start": load_start, "loadavg_end": loadavg(),
           "seconds": time.perf_counter() - started, **result}
    write_json(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
