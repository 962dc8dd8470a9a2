"""Receipts against a dishonest owner: what each of issue 15's attacks gets from the verifier, and what the
verifier's evidence checks (``verifier._evidence``) cost honest owners.

    python -m benchmarks.trust_table --out docs/results/trust.md [--zoo DIR ...]

Every submission goes through an in-process ``VerifierService`` (the same checks, comparison and signing as
``verifier serve``; no network) whose registry holds the population's bases (``zoo.trust_attacks.Lab``).

- Honest models: every model of each zoo given (``python -m zoo.build`` output; by default the quick zoo and the
  quick held-out zoo, built under ``--cache`` if absent), and the tiny random models of every family of
  ``zoo.tiny`` with every function-preserving attack of ``zoo.attacks`` applied (the attack suite); each
  submitted as its owner's agent computes it, under the layer policies ``last2`` and ``all``. A receipt of
  ``insufficient-evidence`` for one of them is a false refusal; the table counts them and the margins of each
  check (the largest or smallest value an honest model showed, next to the tolerance).
- Attacks: with the first seed of each family's base registered, for every derived model of the quick zoo whose
  honest receipt is ``derived`` (the stolen model), each attack of ``zoo.trust_attacks`` (the other model: the
  same family's second seed, not registered); and framing: a second trusted owner key submits a derived model's
  terms under an independent model's weight commitment, with and without ``require_possession``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from owner._fingerprint import Fingerprint
from protocol import Receipt
from protocol.terms import group_terms
from verifier._evidence import DEFAULT_RULES, measure_group
from verifier.errors import VerifierError
from zoo import trust_attacks as A
from zoo.tiny import FAMILIES, make_tiny

Attack = Callable[[Fingerprint, Fingerprint], A.Submission]
ATTACKS: dict[str, tuple[Attack, str]] = {
    "another model's terms": (lambda s, o: A.another_models_terms(s, o),
                              "audit: `pawprint audit recompute` (the terms are not the committed weights')"),
    "permuted probe rows (all terms)": (lambda s, o: A.permuted_rows(s), "audit: `pawprint audit recompute`"),
    "rotated probe rows (all terms)": (lambda s, o: A.rotated_rows(s), "audit: `pawprint audit recompute`"),
    "noise at 32x the spread": (lambda s, o: A.noisy(s, 32), "evidence: ffn-norm, shared-subspace"),
    "noise at 64x the spread": (lambda s, o: A.noisy(s, 64), "evidence: ffn-norm, shared-subspace"),
    "all-constant terms": (lambda s, o: A.constant(s), "evidence: constant"),
    "one-hot terms (identity)": (lambda s, o: A.one_hot(s), "evidence: exact zeros"),
    "15 probe tokens declared": (lambda s, o: A.few_probe_tokens(s), "evidence: probe coverage floor"),
    "no term groups": (lambda s, o: A.no_groups(s), "evidence: no groups"),
    "terms of two models mixed": (lambda s, o: A.mixed_models(s, o), "evidence: shared-subspace"),
}
LAYER0 = "layer 0 only, false metadata (policy all)"


@dataclass
class Honest:
    source: str
    model: str
    policy: str
    verdict: str
    findings: list[str]
    rows: int
    tokens: int
    layers: int
    width: int | None
    max_zero_fraction: float
    min_rank_ratio: float
    max_ffn_norm: float
    outside_energy: float | None
    min_common_fraction: float | None  # over the receipt's matches: common probe tokens / the base's present
    min_common: int | None
    evidence_s: float  # time of the plausibility checks on all groups (this process, this machine)


@dataclass
class Outcome:
    attack: str
    stolen: str
    honest_verdict: str
    verdict: str  # or "refused: ..."
    findings: list[str] = field(default_factory=list)
    possession: str | None = None
    audit: str | None = None  # ``pawprint audit recompute`` with the committed weights, where run


def _zoo_models(zoo: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path, str | None]]]:
    """``(bases, models)`` of a built zoo: bases by name, every model with its parent."""
    info = json.loads((zoo / "lineage.json").read_text())
    models = [(m["name"], zoo / m["name"], m.get("parent")) for m in info["models"] if (zoo / m["name"]).exists()]
    bases = [(name, path) for name, path, parent in models if parent is None]
    return bases, models


def _measure(source: str, name: str, policy: str, fp: Fingerprint, r: Receipt,
             present: dict[tuple[bytes, str], int]) -> Honest:
    manifest = fp.manifest
    width = manifest.model.get("d_model")
    width = width if isinstance(width, int) else None
    inv = group_terms(manifest, fp.terms)
    t0 = time.perf_counter()
    ms = [measure_group(g, width, b"bench", DEFAULT_RULES, i)[0] for i, g in enumerate(inv)]
    elapsed = time.perf_counter() - t0
    g0 = manifest.groups[0]
    outside = [x.outside_energy for x in ms if x.outside_energy is not None]
    fractions = [m.common_probe_tokens / present[(m.entry, m.probe_set_id)] for m in r.matches]
    return Honest(source, name, policy, r.verdict, list(r.evidence), min(g.rows for g in manifest.groups),
                  len(g0.probe_set.tokens), min(len(g.layers) for g in manifest.groups), width,
                  max(x.max_zero_fraction for x in ms), min(x.min_rank_ratio for x in ms),
                  max(x.max_ffn_norm for x in ms), max(outside) if outside else None,
                  min(fractions) if fractions else None, min((m.common_probe_tokens for m in r.matches), default=None),
                  elapsed)


def honest_population(source: str, bases: list[tuple[str, Path]], models: list[tuple[str, Path]], work: Path,
                      log: Callable[[str], None], sketch: int = 0) -> list[Honest]:
    out: list[Honest] = []
    for policy in ("last2", "all"):
        lab = A.Lab.create(work / f"{source}-{policy}", bases, layers=policy, sketch=sketch)
        try:
            snap = lab.registry.log_snapshot(terms=False)
            present = {(b.entry, g.probes.id): g.group.rows for b in lab.registry.base_models(snap.entries)
                       for g in b.invariants}
            for name, path in models:
                fp = lab.honest(path)
                r = lab.submit((fp.manifest, fp.terms))
                out.append(_measure(source, name, policy, fp, r, present))
                log(f"{source} {policy} {name}: {r.verdict} {list(r.evidence)[:2]}")
        finally:
            lab.close()
    return out


def attack_suite(work: Path, log: Callable[[str], None]) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Tiny random models of every family (two seeds) and every applicable function-preserving attack of each."""
    from zoo.attacks import ATTACKS as FP_ATTACKS
    from zoo.attacks import AttackNotApplicable, attack

    bases: list[tuple[str, Path]] = []
    models: list[tuple[str, Path]] = []
    for family in FAMILIES:
        base = make_tiny(family, work / f"{family}-s0", seed=0)
        bases.append((f"{family}-s0", base))
        models += [(f"{family}-s0", base), (f"{family}-s1", make_tiny(family, work / f"{family}-s1", seed=1))]
        for kind in FP_ATTACKS:
            try:
                attack(base, work / f"{family}-{kind}", kind)
            except AttackNotApplicable:
                continue
            models.append((f"{family}-{kind}", work / f"{family}-{kind}"))
    log(f"attack suite: {len(models)} models")
    return bases, models


def attacks_on(zoo: Path, work: Path, log: Callable[[str], None], sketch: int = 0) -> list[Outcome]:
    everything, models = _zoo_models(zoo)
    # registered: the first seed of each family's base (as the demo does); the second seeds stay unregistered
    # and serve as the independent "other model"
    bases = [(n, p) for n, p in everything if n.endswith("-s0")]
    out: list[Outcome] = []
    lab = A.Lab.create(work / "attacks", bases, sketch=sketch)
    all_lab = A.Lab.create(work / "attacks-all", bases, layers="all", sketch=sketch)
    guarded = A.Lab.create(work / "attacks-possession", bases, require_possession=True, sketch=sketch)
    try:
        by_name = {n: p for n, p, _ in models}
        for name, path, parent in models:
            if parent is None:
                continue
            fp = lab.honest(path)
            honest = lab.submit((fp.manifest, fp.terms)).verdict
            if honest != "derived":
                continue
            # another model: an unregistered independent base of the same family (another seed)
            family = name.split("-")[0]
            other = lab.honest(by_name[next(n for n, _ in everything if n.startswith(family) and n.endswith("-s1"))])
            for attack_name, (fn, _) in ATTACKS.items():
                out.append(_run(lab, attack_name, name, honest, fn(fp, other), weights=path))
            for i in range(len(fp.manifest.groups)):
                out.append(_run(lab, "one term group left out (each in turn)", name, honest, A.drop_group(fp, i)))
            fp_all = all_lab.honest(path)
            out.append(_run(all_lab, LAYER0, name, honest, A.first_layer_only(fp_all)))
            # framing: the framer submits this derived model's terms under the independent model's commitment
            framed = A.another_models_terms(other, fp)
            victim = by_name[next(n for n, _ in everything if n.startswith(family) and n.endswith("-s1"))]
            out.append(_run(lab, "framing: copied commitment", name, honest, framed, framer=True, weights=victim))
            out.append(_run(guarded, "framing, verifier requires possession", name, honest, framed, framer=True))
            log(f"attacks on {name}: done")
    finally:
        for x in (lab, all_lab, guarded):
            x.close()
    return out


AUDITED = frozenset({"another model's terms", "permuted probe rows (all terms)", "rotated probe rows (all terms)",
                     "framing: copied commitment"})


def _run(lab: A.Lab, attack_name: str, stolen: str, honest: str, sub: A.Submission, framer: bool = False,
         weights: Path | None = None) -> Outcome:
    """Submit; for the attacks only an audit can catch, run ``audit recompute`` with ``weights`` (the weights
    the receipt's commitment names) and the owner's signed submission."""
    from pawprint.cli_audit import recompute
    from protocol import open_receipt

    try:
        signed = lab.submit_signed(sub, lab.framer if framer else None)
    except VerifierError as e:
        return Outcome(attack_name, stolen, honest, f"refused: {e}")
    r = open_receipt(signed, lab.verifier.public_key)
    audit = None
    if attack_name in AUDITED and weights is not None:
        try:
            audit = recompute(signed, lab.verifier.public_key, weights, submission=lab.last_submission).outcome
        except Exception as e:  # reported in the table: the audit command's failure, not the attack's success
            audit = f"audit error ({type(e).__name__}: {e})"
    return Outcome(attack_name, stolen, honest, r.verdict, list(r.evidence), r.possession, audit)


def synthetic_cost(sizes: tuple[tuple[int, int], ...] = ((512, 128), (2048, 1024))) -> list[dict[str, float]]:
    """Seconds of the plausibility checks on one group of 2 layers x 3 terms of random whitened terms of
    ``m`` probe rows and width ``d`` (the shared-subspace check on: ``d < m``), median of 3."""
    import numpy as np

    from protocol import ProbeSpec, TermGroup
    from protocol.terms import InvariantSet
    from verifier._evidence import WHITENED_METHOD_PREFIX

    out = []
    rng = np.random.default_rng(0)
    for m, d in sizes:
        def whitened(m: int = m, d: int = d) -> np.ndarray:
            return np.linalg.qr(rng.standard_normal((m, d)))[0]

        e = whitened()
        terms = {(layer, n): (e @ rng.standard_normal((d, d)) @ e.T if n != "ffn" else whitened() @ e.T)
                 .astype(np.float32) for layer in (0, 1) for n in ("attn_qk", "attn_vo", "ffn")}
        group = TermGroup(probe_set=ProbeSpec("p", 1, "synthetic", tuple(f"t{i}" for i in range(m))),
                          present=(True,) * m, layers=(0, 1), method="pawprint",
                          method_id=WHITENED_METHOD_PREFIX + "synthetic)", terms=("attn_qk", "attn_vo", "ffn"))
        inv = InvariantSet(group, {}, terms)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = measure_group(inv, d, b"cost")[1]
            times.append(time.perf_counter() - t0)
        assert not found, found
        out.append({"m": m, "d": d, "seconds": sorted(times)[1]})
    return out


def render(honest: list[Honest], outcomes: list[Outcome], seconds: float, command: str,
           cost: list[dict[str, float]]) -> str:
    rules = DEFAULT_RULES
    lines = [
        "# Receipts against a dishonest owner: attack outcomes and the evidence checks' cost",
        "",
        f"Command: `{command}` ({seconds:.0f} s on {platform.machine()}, {platform.python_version()}). "
        "Generated: do not edit by hand.",
        "",
        "Every submission goes through an in-process `VerifierService` (the checks, comparison and signing of "
        "`verifier serve`, without the network) whose registry holds the population's bases. Every receipt "
        "below is `owner-attested`: the verifier never sees weights. Evidence rule: "
        f"`{rules.rule}` (`verifier/_evidence.py`).",
        "",
        "## Attacks (the stolen model's honest verdict is `derived`)",
        "",
        "| attack | cases | receipts `insufficient-evidence` | refused | `independent` | other verdicts | "
        "audit from the weights | what catches it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    catches = {k: v[1] for k, v in ATTACKS.items()}
    catches["one term group left out (each in turn)"] = "evidence: every base compared (for independent)"
    catches[LAYER0] = "evidence: layer floor (and missing layers when the metadata is true)"
    catches["framing: copied commitment"] = ("receipt shows no possession; audit: `pawprint audit recompute` with "
                                             "the victim's weights")
    catches["framing, verifier requires possession"] = "possession proof (verifier refuses)"
    if "--sketch" in command:  # the FFN-norm bound is not checked on sketches (verifier/_evidence.py)
        catches = {k: v.replace("ffn-norm, shared-subspace", "shared-subspace (per term name, on the sketches)")
                   for k, v in catches.items()}
    for name in dict.fromkeys(o.attack for o in outcomes):
        rows = [o for o in outcomes if o.attack == name]
        c = Counter("refused" if o.verdict.startswith("refused") else o.verdict for o in rows)
        other = ", ".join(f"{k} {v}" for k, v in sorted(c.items())
                          if k not in ("insufficient-evidence", "refused", "independent")) or "0"
        audits = Counter(o.audit for o in rows if o.audit is not None)
        audit = ", ".join(f"{k} {v}" for k, v in sorted(audits.items())) or "not run"
        lines.append(f"| {name} | {len(rows)} | {c['insufficient-evidence']} | {c['refused']} | "
                     f"{c['independent']} | {other} | {audit} | {catches.get(name, '')} |")
    lines += ["", "Stolen models: " + ", ".join(sorted({o.stolen for o in outcomes})) + ". The audit column: "
              "`pawprint audit recompute` (`pawprint.cli_audit.recompute`) with the weights the receipt's commitment "
              "names (the stolen model; for framing, the framed owner's model) and the owner's signed submission; "
              "`inconsistent` means the audit exposes the submission.", ""]
    examples = {}
    for o in outcomes:
        if o.attack not in examples and (o.findings or o.verdict.startswith("refused")):
            examples[o.attack] = o.findings[0] if o.findings else o.verdict
    lines += ["First finding (or refusal) per attack, as the receipt states it:", ""]
    lines += [f"- {k}: `{v}`" for k, v in examples.items()]
    refused = [h for h in honest if h.verdict == "insufficient-evidence"]
    sources = Counter(h.source for h in honest)
    lines += [
        "",
        "## Honest models: false refusals and margins",
        "",
        f"{len(honest)} honest submissions ({', '.join(f'{k}: {v}' for k, v in sources.items())}; each model under "
        f"the layer policies `last2` and `all`): **{len(refused)} `insufficient-evidence`**"
        + ("" if not refused else ": " + "; ".join(f"{h.source} {h.model} {h.policy}: {h.findings[0]}"
                                                      for h in refused)) + ".",
        "",
        "| check | tolerance | worst honest value | where |",
        "|---|---|---|---|",
    ]

    def worst(key: Callable[[Honest], float | None], hi: bool) -> tuple[str, str]:
        vals = [(key(h), h) for h in honest if key(h) is not None]
        if not vals:
            return "n/a", ""
        v, h = (max if hi else min)(vals, key=lambda x: x[0])  # type: ignore[arg-type,return-value]
        return f"{v:.3g}", f"{h.source} {h.model} ({h.policy})"

    for label, tol, key, hi in [
        ("layers per group", f">= {rules.min_layers}", lambda h: h.layers, False),
        ("probe tokens present (smallest group)", f">= {rules.min_probe_rows}", lambda h: h.rows, False),
        ("common probe tokens / base's present (any match)", f">= {rules.min_common_fraction} (for independent)",
         lambda h: h.min_common_fraction, False),
        ("common probe tokens (any match)", f">= {rules.min_probe_rows} (for independent)", lambda h: h.min_common,
         False),
        ("exact zeros in a term", f"<= {rules.max_zero_fraction}", lambda h: h.max_zero_fraction, True),
        ("sketch s2/s1 (rank one)", f"> {rules.rank_one_tol}", lambda h: h.min_rank_ratio, False),
        ("whitened FFN spectral norm", f"<= {rules.ffn_norm_max}", lambda h: h.max_ffn_norm, True),
        ("energy outside a d_model subspace", f"<= {rules.subspace_tol}", lambda h: h.outside_energy, True),
    ]:
        v, where = worst(key, hi)
        lines.append(f"| {label} | {tol} | {v} | {where} |")
    bites = sum(1 for h in honest if h.outside_energy is not None)
    lines += [
        "",
        f"The shared-subspace check can bite only where the probe rows outnumber the declared width: "
        f"{bites} of {len(honest)} honest submissions. Where `d_model` >= the probe rows (most real models on "
        "probe sets of a few hundred tokens) noise is still caught by the FFN norm bound (method "
        "`pawprint-terms/2` only), but a mix of two models' terms is not.",
        "",
        "## Cost of the checks",
        "",
        f"Largest time of the plausibility checks on one honest submission above: "
        f"{max(h.evidence_s for h in honest):.3f} s. Synthetic groups of 2 layers x 3 terms (random whitened "
        "terms, shared-subspace check on), median of 3: "
        + "; ".join(f"m = {c['m']:.0f}, d_model = {c['d']:.0f}: {c['seconds']:.2f} s" for c in cost)
        + f". Machine: {platform.machine()}, 2 cores shared with other work (times are noisy).",
        "",
        "## What no check on the terms can catch",
        "",
        "Another model's honest terms, and one permutation or rotation applied to the probe rows of every term, "
        "are consistent sets of terms: every rank, subspace and norm above is unchanged. The receipt is "
        "`owner-attested` and says so in its headline; only a recompute from the committed weights (`pawprint "
        "audit recompute RECEIPT MODEL`, by a neutral party holding them) shows that the terms are not those "
        "weights' own. See docs/threat-model.md.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trust_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/results/trust.md"))
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "pawprint" / "trust-zoo",
                   help="where the quick zoos are built if absent")
    p.add_argument("--zoo", type=Path, action="append", default=[],
                   help="another built zoo (lineage.json) whose models count as honest (repeatable)")
    p.add_argument("--no-suite", action="store_true", help="leave out the tiny models and the attack suite")
    p.add_argument("--sketch", type=int, default=0, metavar="K",
                   help="a verifier asking for K x K sketches (issue 16; the service's default is 256); 0: the terms")
    args = p.parse_args(argv)
    from zoo.build import build_zoo

    started = time.time()
    log = lambda s: print(s, flush=True)  # noqa: E731
    quick = Path(build_zoo(args.cache / "quick", quick=True, threads=1)).parent
    held = Path(build_zoo(args.cache / "quick-heldout", quick=True, threads=1, heldout=True)).parent
    honest: list[Honest] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for source, zoo in [("quick zoo", quick), ("held-out zoo", held), *((str(z), z) for z in args.zoo)]:
            zoo_bases, zoo_models = _zoo_models(zoo)
            honest += honest_population(source, zoo_bases, [(n, p) for n, p, _ in zoo_models], work, log,
                                        args.sketch)
        if not args.no_suite:
            suite_bases, suite_models = attack_suite(work / "suite", log)
            honest += honest_population("tiny + attack suite", suite_bases, suite_models, work, log, args.sketch)
        outcomes = attacks_on(quick, work, log, args.sketch)
    cost = synthetic_cost()
    log(f"cost: {cost}")
    seconds = time.time() - started
    command = "python -m benchmarks.trust_table --out " + str(args.out) + "".join(f" --zoo {z}" for z in args.zoo) \
        + (f" --sketch {args.sketch}" if args.sketch else "")
    args.out.write_text(render(honest, outcomes, seconds, command, cost))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"honest": [asdict(h) for h in honest], "attacks": [asdict(o) for o in outcomes],
         "rule": DEFAULT_RULES.rule, "seconds": round(seconds, 1), "cost": cost}, indent=1,
        default=lambda x: None if isinstance(x, float) and math.isnan(x) else x) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
