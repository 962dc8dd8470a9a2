"""Private comparison under CKKS beside the plain sketch mode (issue 16, item 4, a measured prototype).

    python -m benchmarks.private_compare [--bases 1,10,100] [--ks 16,32,64] [--layers 2] [--attack-k 16]
                                         [--out docs/results/private_compare.md]

For every registry size B and sketch size k, in one run and on one machine:

- **plain**: the owner sends its unit sketches (``k^2`` float32 per layer and term) and the verifier computes the
  cosines with every base (``protocol._sketch.sketch_cosine``) and matches layers (``verifier._private
  .matched_scores``, the same matching for both modes);
- **ckks**: the verifier makes a key (once per session), encrypts every base's sketches (once per key: a registry
  would keep them), sends the offer (public context + ciphertexts), the owner answers (``owner._private
  .answer_offer``: load the context and ciphertexts, encrypted inner products, pack, smudge), the verifier decrypts
  and matches. Bytes each way, seconds on each side, per base and per term, and the error of the decrypted
  scores against the plaintext cosines.

Data: synthetic sketches (standard Gaussian ``k x k`` per layer and term; the owner's is base 0's plus noise, so
one base scores high): the costs depend on the shapes only, and the error on the values only through their
norms, which are unit here as in the protocol.

**Malicious verifier.** At ``--attack-k`` the verifier sends ``q`` orthonormal chosen directions instead of bases
(through the real CKKS path, the owner's direction budget raised to let them through) and reconstructs the
owner's sketch of one term from the decrypted answers: the cosine of the reconstruction with the true sketch,
per owner layer, as ``q`` grows to ``k^2``.

Writes ``docs/results/private_compare.md`` and ``.json`` (command, date, load average, machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owner._private import DEFAULT_SMUDGE, OwnerPolicy, answer_offer
from protocol import TERMS
from protocol._private_wire import (
    COEFF_MOD_BIT_SIZES,
    HE_STANDARD_128_MAX_LOG_Q,
    POLY_MODULUS_DEGREE,
    SCALE_BITS,
    SLOTS,
    decode_answer,
    decode_offer,
    unit_vector,
)
from protocol._sketch import sketch_cosine
from verifier._private import PrivateVerifier, matched_scores

ROOT = Path(__file__).resolve().parents[1]
PROBE_SET = "benchmark-probe-set"
Sketches = dict[tuple[int, str], np.ndarray]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sketches(rng: np.random.Generator, k: int, layers: int) -> Sketches:
    return {(x, t): rng.standard_normal((k, k)) for x in range(layers) for t in TERMS}


def _world(seed: int, bases: int, k: int, layers: int) -> tuple[list[tuple[str, Sketches]], Sketches]:
    rng = np.random.default_rng(seed)
    registry = [(f"base{i:03d}", _sketches(rng, k, layers)) for i in range(bases)]
    owner = {key: s + 0.5 * rng.standard_normal(s.shape) for key, s in registry[0][1].items()}
    return registry, owner


def plain(registry: Sequence[tuple[str, Sketches]], owner: Sketches, layers: int) -> dict[str, Any]:
    """The plain sketch mode: what the owner sends, and the verifier's seconds to score every base."""
    sent = sum(np.asarray(s, dtype=np.float32).nbytes for s in owner.values())
    t0 = time.perf_counter()
    cos = {name: {(x, y, t): sketch_cosine(owner[(x, t)], sk[(y, t)]) for x in range(layers)
                  for y in range(layers) for t in TERMS} for name, sk in registry}
    matched = {name: matched_scores(c, range(layers), range(layers)) for name, c in cos.items()}
    secs = time.perf_counter() - t0
    return {"owner_to_verifier_bytes": sent, "verifier_to_owner_bytes": 0, "verifier_s": secs, "owner_s": 0.0,
            "cosines": cos, "matched": matched}


def ckks(registry: Sequence[tuple[str, Sketches]], owner: Sketches, k: int, layers: int,
         verifier: PrivateVerifier, keygen_s: float, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    items = [i for name, sk in registry for i in verifier.encrypt_base(name, sk)]
    encrypt_s = time.perf_counter() - t0
    offer = verifier.offer_items(PROBE_SET, k, items)
    policy = OwnerPolicy(max_directions=max(256, len(registry) * layers), max_bases=max(128, len(registry)))
    t0 = time.perf_counter()
    answer = answer_offer(offer, owner, PROBE_SET, k, np.random.default_rng(seed), policy)
    owner_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cos = verifier.scores(answer)
    decrypt_s = time.perf_counter() - t0
    matched = {name: matched_scores(c, range(layers), range(layers)) for name, c in cos.items()}
    match_s = time.perf_counter() - t0 - decrypt_s
    n_items = len(decode_offer(offer).items)
    return {"verifier_to_owner_bytes": len(offer), "context_bytes": len(verifier.public_context),
            "base_ciphertext_bytes": sum(len(i.ciphertext) for i in items) / len(items),
            "answer_ciphertext_bytes": float(np.mean([len(i.ciphertext) for i in decode_answer(answer).items])),
            "owner_to_verifier_bytes": len(answer), "offer_items": n_items,
            "verifier_keygen_s": keygen_s, "verifier_encrypt_s": encrypt_s, "owner_s": owner_s,
            "verifier_decrypt_s": decrypt_s, "verifier_match_s": match_s, "cosines": cos, "matched": matched}


def attack(k: int, layers: int, qs: Sequence[int], verifier: PrivateVerifier, seed: int) -> list[dict[str, Any]]:
    """A malicious verifier's reconstruction of the owner's sketch of one term from ``q`` chosen directions."""
    rng = np.random.default_rng(seed)
    owner = _sketches(rng, k, layers)
    term = TERMS[0]
    truth = {x: unit_vector(owner[(x, term)]) for x in range(layers)}
    basis, _ = np.linalg.qr(rng.standard_normal((k * k, k * k)))  # orthonormal directions, columns
    rows = []
    for q in qs:
        dirs = basis[:, :q].T
        chosen = {(j, term): dirs[j].reshape(k, k) for j in range(q)}  # a "base" whose q "layers" are probes
        t0 = time.perf_counter()
        offer = verifier.offer(PROBE_SET, k, [("probe", chosen)])
        default_refuses = q * 1 > OwnerPolicy().max_directions
        answer = answer_offer(offer, {key: s for key, s in owner.items() if key[1] == term}, PROBE_SET, k,
                              np.random.default_rng(seed + q), OwnerPolicy(max_directions=q))
        got = verifier.scores(answer)["probe"]
        secs = time.perf_counter() - t0
        cos = []
        for x in range(layers):
            c = np.array([got[(x, j, term)] for j in range(q)])
            recovered = dirs.T @ c  # least squares on orthonormal directions: the projection on their span
            cos.append(float(recovered @ truth[x] / max(np.linalg.norm(recovered), 1e-300)))
        rows.append({"q": q, "fraction_of_k2": q / (k * k), "recovered_cosine": cos,
                     "expected_cosine_random_subspace": float(np.sqrt(q / (k * k))),
                     "refused_by_default_policy": default_refuses, "seconds": secs})
        refused = " - refused by the default policy" if default_refuses else ""
        _log(f"  attack k={k} q={q:5d}: recovered cosine {', '.join(f'{c:.4f}' for c in cos)} "
             f"(sqrt(q/k^2) = {np.sqrt(q / (k * k)):.3f}){refused} [{secs:.1f} s]")
    return rows


def run(bases: Sequence[int], ks: Sequence[int], layers: int, attack_k: int, seed: int) -> dict[str, Any]:
    import tenseal

    t0 = time.perf_counter()
    verifier = PrivateVerifier()
    keygen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tenseal.context_from(verifier.public_context)
    context_load_s = time.perf_counter() - t0
    _log(f"key pair and Galois keys: {keygen_s:.2f} s, public context {len(verifier.public_context)} bytes, "
         f"loaded by the owner in {context_load_s:.2f} s")
    runs = []
    for k in ks:
        for b in bases:
            registry, owner = _world(seed + 1000 * k + b, b, k, layers)
            p = plain(registry, owner, layers)
            c = ckks(registry, owner, k, layers, verifier, keygen_s, seed + b)
            errs = np.array([c["cosines"][n][key] - p["cosines"][n][key] for n in p["cosines"]
                             for key in p["cosines"][n]])
            same_pairs = all(c["matched"][n][1] == p["matched"][n][1] for n in p["matched"])
            scores = b * layers * layers * len(TERMS)
            row = {"bases": b, "k": k, "layers": layers, "scores": scores,
                   "plain": {key: v for key, v in p.items() if key not in ("cosines", "matched")},
                   "ckks": {key: v for key, v in c.items() if key not in ("cosines", "matched")},
                   "error_max": float(np.abs(errs).max()), "error_rms": float(np.sqrt(np.mean(errs**2))),
                   "same_layer_pairs": same_pairs}
            bt = b * len(TERMS)
            row["per_base_term"] = {
                "verifier_to_owner_bytes": (c["verifier_to_owner_bytes"] - c["context_bytes"]) / bt,
                "owner_to_verifier_bytes": c["owner_to_verifier_bytes"] / bt,
                "verifier_encrypt_s": c["verifier_encrypt_s"] / bt, "owner_s": c["owner_s"] / bt,
                "verifier_decrypt_s": c["verifier_decrypt_s"] / bt,
                "plain_owner_to_verifier_bytes_per_term": p["owner_to_verifier_bytes"] / len(TERMS),
                "plain_verifier_s": p["verifier_s"] / bt}
            runs.append(row)
            _log(f"k={k:3d} bases={b:4d}: plain {p['owner_to_verifier_bytes']} B up, {p['verifier_s']:.4f} s | ckks "
                 f"{c['verifier_to_owner_bytes'] / 1e6:.1f} MB down, {c['owner_to_verifier_bytes'] / 1e6:.2f} MB up, "
                 f"encrypt {c['verifier_encrypt_s']:.2f} s, owner {c['owner_s']:.2f} s, decrypt "
                 f"{c['verifier_decrypt_s']:.3f} s | error max {row['error_max']:.2e} rms {row['error_rms']:.2e}")
    qs = sorted({q for q in (attack_k, attack_k * attack_k // 16, attack_k * attack_k // 4, attack_k * attack_k // 2,
                             attack_k * attack_k) if 1 <= q <= attack_k * attack_k})
    attacks = attack(attack_k, layers, qs, verifier, seed + 7)
    return {"runs": runs, "attack": {"k": attack_k, "layers": layers, "term": TERMS[0], "rows": attacks},
            "keygen_s": keygen_s, "context_bytes": len(verifier.public_context), "context_load_s": context_load_s}


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "python": platform.python_version()}


def render(doc: dict[str, Any]) -> str:
    import tenseal

    m = doc["machine"]
    lines = [
        "# Private comparison under CKKS: a measured prototype (issue 16, item 4)",
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['date']}; machine: {m['cpu']}, nproc {m['nproc']}, Python {m['python']}, TenSEAL "
        f"{tenseal.__version__}; load average at start {', '.join(f'{x:.2f}' for x in doc['loadavg_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in doc['loadavg_end'])} (2 cores shared with other work: seconds are "
        "indicative, bytes exact).",
        "",
        "Code: `verifier/_private.py` (keys, encrypted bases, decrypted scores), `owner/_private.py` (encrypted inner",
        "products), `protocol/_private_wire.py` (parameters, the two messages, size bounds); tests in",
        "`tests/verifier/test_private_compare.py`. **Not wired into the gRPC protocol** (see the last section).",
        "",
        "## The mechanism",
        "",
        "The verifier holds the CKKS secret key. It encrypts each registered base's unit-normalised term sketch",
        "(`protocol._sketch`, `k x k`, flattened, tiled to fill all 4096 slots) once per key: one ciphertext per base,",
        "base layer and term name, and sends them with its public context (public key, Galois keys; never the secret",
        "key). The owner multiplies each by its own unit-normalised sketch of the same term name for every owner",
        "layer (plaintext), sums all slots (after TenSEAL's rotations every slot of a tiled vector holds the whole",
        "sum), packs the `owner layers x base layers` sums of one base and term into **one ciphertext per base and",
        "term**, adds a",
        "fresh public-key encryption of Gaussian noise (sd 1e-6 in cosine units: re-randomisation and smudging) and",
        "returns them. The verifier decrypts exactly the sketch cosines the comparison scores and matches layers as",
        "in the plain mode (same layer pairs in every run below).",
        "",
        "**Parameters (128-bit security).** Polynomial modulus degree N = "
        f"{POLY_MODULUS_DEGREE} ({SLOTS} slots), coefficient moduli {list(COEFF_MOD_BIT_SIZES)} bits "
        f"({sum(COEFF_MOD_BIT_SIZES)} bits in all), scale 2^{SCALE_BITS}. The Homomorphic Encryption Security "
        f"Standard (Albrecht et al. 2018, table 1) allows at most {HE_STANDARD_128_MAX_LOG_Q[POLY_MODULUS_DEGREE]} "
        "bits of log q at N = 8192 for 128-bit classical security (uniform ternary secret, error sd 3.2, as SEAL",
        "uses); 200 <= 218, and SEAL's own tc128 check accepts the context. Two 40-bit primes for the two",
        "rescalings (the plaintext product, the mask inside `pack_vectors`); the 60-bit first prime keeps ~20 bits",
        "above the scale for values in [-1, 1]. Both sides pin them: other parameters are refused.",
        "",
        "## Cost beside the plain sketch mode",
        "",
        f"Layers per side {doc['runs'][0]['layers']}, three terms; the CKKS bytes and seconds do not depend on k",
        "(every sketch is tiled to the 4096 slots; k <= 64). Down = verifier to owner, up = owner to verifier.",
        f"One-time per session: key generation {doc['keygen_s']:.2f} s, public context {doc['context_bytes'] / 1e6:.1f}"
        f" MB (Galois keys, most of it; sent once per session, included in 'down'), loaded by the owner in "
        f"{doc['context_load_s']:.2f} s (included in 'owner s').",
        "",
        "| k | bases | scores | plain up | plain verifier s | ckks down | ckks up | verifier encrypt s | owner s "
        "| verifier decrypt s | max abs error | rms error |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"]:
        p, c = r["plain"], r["ckks"]
        lines.append(
            f"| {r['k']} | {r['bases']} | {r['scores']} | {p['owner_to_verifier_bytes']} B | {p['verifier_s']:.4f} | "
            f"{c['verifier_to_owner_bytes'] / 1e6:.1f} MB | {c['owner_to_verifier_bytes'] / 1e6:.2f} MB | "
            f"{c['verifier_encrypt_s']:.2f} | {c['owner_s']:.2f} | {c['verifier_decrypt_s']:.3f} | "
            f"{r['error_max']:.1e} | {r['error_rms']:.1e} |")
    big = max(doc["runs"], key=lambda r: (r["bases"], r["k"]))
    pb = big["per_base_term"]
    lines += [
        "",
        f"Per base and term (k = {big['k']}, {big['bases']} bases, {big['layers']} x {big['layers']} layers): "
        f"down {pb['verifier_to_owner_bytes'] / 1e3:.0f} kB ({big['layers']} ciphertexts of "
        f"{big['ckks']['base_ciphertext_bytes'] / 1e3:.0f} kB), up {pb['owner_to_verifier_bytes'] / 1e3:.0f} kB "
        f"(one ciphertext), verifier encrypt {pb['verifier_encrypt_s'] * 1e3:.1f} ms, owner "
        f"{pb['owner_s'] * 1e3:.0f} ms, verifier decrypt {pb['verifier_decrypt_s'] * 1e3:.2f} ms; the plain mode sends "
        f"{pb['plain_owner_to_verifier_bytes_per_term']:.0f} B per term once whatever the registry size, and scores "
        f"a base and term in {pb['plain_verifier_s'] * 1e6:.0f} us.",
        "",
        "Error: the decrypted cosines against the plaintext ones (CKKS at scale 2^40 plus the owner's smudging noise",
        "of sd 1e-6); the verdict rounds scores to 3 places (half a unit: 5e-4), so the error moves a rounded score",
        "only when it lies within the error of a rounding boundary (probability about 2 x error / 1e-3 per score).",
        "",
        "## What each side learns",
        "",
        "- **The owner**: ciphertexts under the verifier's key (IND-CPA under RLWE at 128-bit parameters) and the",
        "  offer's shape (how many bases, their names as given, their layer counts, k). No value of any base.",
        "- **An honest verifier**: the owner-layer x base-layer x term sketch cosines of each base, to the error",
        "  above, and nothing else in any slot: the test reads every raw slot of each answer and finds only the scores",
        "  (`pack_vectors` repeats them). Note: a plain TenSEAL `dot` of an untiled vector leaves partial sums in the",
        "  other slots whose differences are the owner's products one by one (the test shows it); hence the tiling.",
        "  The ciphertext that comes back is otherwise a linear function of the verifier's own ciphertexts; the fresh",
        "  encryption added by the owner re-randomises it and its noise smudges the owner-dependent CKKS error. That",
        "  is heuristic, not proven circuit privacy (statistical smudging would need noise ~2^40 times the error,",
        "  which these parameters cannot carry).",
        "- **A malicious verifier** can encrypt chosen vectors instead of bases; each is one direction and yields its",
        "  inner product with the owner's sketch of that term at every owner layer. The owner cannot tell a real",
        "  base from a chosen vector (nothing proves the ciphertext is a registered base's sketch). Measured below:",
        "  k^2 directions recover the sketch exactly, which is what the plain mode sends anyway; q < k^2 random",
        "  directions recover its projection (cosine ~ sqrt(q / k^2)). What bounds it: the owner's policy",
        f"  (`OwnerPolicy`: at most {doc['default_policy']['max_directions']} vectors per term and "
        f"{doc['default_policy']['max_bases']} bases per offer by default; at k = 16 that is k^2 = 256, i.e. the",
        "  whole sketch in one session; at k = 32 a quarter of the energy, at k = 64 1/16), and a count the owner",
        "  would have to keep across sessions and verifiers (not built). Requiring each offered base to be a log",
        "  entry bounds the directions by the registered layers, but a verifier that runs the log could register",
        "  probes (visible in the public log, which is the deterrent).",
        "- **The crux**: an honest comparison itself sends B x L_b directions per term (bases x their layers), and",
        "  a malicious verifier needs k^2 of them. The private mode hides the owner's sketch only while the",
        "  directions the owner answers stay well below k^2: 100 bases of 2 layers (200) at k = 32 (1024) leave a",
        "  chosen-vector verifier about 20 % of the energy (cosine ~0.44) per session; 100 bases compared on all 32",
        "  layers of a 7B model (3200 directions) would let it recover every sketch, i.e. no better than the plain",
        "  mode. Against an honest-but-curious verifier (real bases only) it reveals the scores alone.",
        "- **The owner's honesty**: not checked. The owner can return ciphertexts of any numbers; the scores are",
        "  owner-attested, as the terms are today.",
        "",
        f"### Malicious-verifier reconstruction (k = {doc['attack']['k']}, term {doc['attack']['term']}, "
        f"{doc['attack']['layers']} owner layers, real CKKS path)",
        "",
        "| chosen directions q | q / k^2 | recovered cosine per owner layer | sqrt(q / k^2) "
        "| refused by the default policy | seconds |",
        "|---:|---:|---|---:|---|---:|",
    ]
    for a in doc["attack"]["rows"]:
        recovered = ", ".join(f"{c:.6f}" for c in a["recovered_cosine"])
        refused = "yes" if a["refused_by_default_policy"] else "no"
        lines.append(f"| {a['q']} | {a['fraction_of_k2']:.3f} | {recovered} | "
                     f"{a['expected_cosine_random_subspace']:.3f} | {refused} | {a['seconds']:.1f} |")
    lines += [
        "",
        "Queries for an exact recovery of one term at every owner layer: k^2 (256 at k = 16, 1024 at k = 32, 4096 at",
        "k = 64), 3 k^2 for all three terms; the default policy caps an offer at 256 per term.",
        "",
        "## What wiring it into the gRPC protocol would take (not done)",
        "",
        "- Messages: `PrivateOffer` (verifier to owner: session id, probe set id, k, public context, the encrypted",
        "  bases as a stream of (log entry, term, layer, ciphertext) chunks; 34 MB of Galois keys once per session)",
        "  and `PrivateAnswer` (owner to verifier: one ciphertext per base and term, streamed).",
        "- Round trips: today one (submission, receipt); private mode adds one before it: the owner opens a session",
        "  and commits to its submission header, the verifier sends the offer, the owner streams the answer, the",
        "  verifier decrypts, decides and signs the receipt.",
        "- Signing: the offer is signed by the verifier's key over its header and a digest of every ciphertext and",
        "  the context (the owner keeps it as evidence of what it was asked, and its count of directions per",
        "  verifier key); the answer is signed by the owner's key like a submission today, over the offer's digest",
        "  and every ciphertext's digest; the receipt names the answer's digest. Every new field checked before",
        "  computation (sizes bounded as in `protocol._private_wire`) and added to the hostile corpus.",
        "- The receipt would carry the scores as today (rounded), so the verdict stays re-derivable.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--bases", default="1,10,100", help="registry sizes (comma-separated)")
    p.add_argument("--ks", default="16,32,64", help="sketch sizes (powers of 2 up to 64)")
    p.add_argument("--layers", type=int, default=2, help="layers per side")
    p.add_argument("--attack-k", type=int, default=16, help="k of the malicious-verifier reconstruction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "private_compare.md")
    args = p.parse_args(argv)
    bases = [int(x) for x in args.bases.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    load_start = os.getloadavg()
    doc: dict[str, Any] = {
        "command": "python -m benchmarks.private_compare" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                              if (argv if argv is not None else sys.argv[1:]) else ""),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(), "loadavg_start": load_start,
        "parameters": {"poly_modulus_degree": POLY_MODULUS_DEGREE, "coeff_mod_bit_sizes": list(COEFF_MOD_BIT_SIZES),
                       "scale_bits": SCALE_BITS, "slots": SLOTS, "smudge": DEFAULT_SMUDGE},
        "default_policy": {"max_directions": OwnerPolicy().max_directions, "max_bases": OwnerPolicy().max_bases},
    }
    doc.update(run(bases, ks, args.layers, args.attack_k, args.seed))
    doc["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(doc), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
