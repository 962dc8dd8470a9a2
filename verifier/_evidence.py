"""Evidence checks: what the verifier, not the owner, accepts as enough to state a verdict.

A submission passes ``verifier._checks`` (signatures, challenge, shapes, digests, finiteness) and is then
compared. Those checks say the bytes are well formed; they do not say the terms are enough, or plausible,
evidence. An owner who stole a model wants ``independent`` and controls every term it sends, so before any
verdict the verifier asks:

- **Sufficient** (``check_sufficient``): at least one term group; the model facts the checks need
  (``n_layers``, ``d_model``, positive integers); in every group, every layer the challenge's layer policy asks
  for (resolved against the declared layer count), at least ``min_layers`` layers, and at least
  ``min_probe_rows`` probe tokens present. After the comparison (``check_matches``), ``independent`` also needs
  every base considered compared, on at least ``min_common_fraction`` of the base's present probe tokens: a base
  left uncompared (a submission that leaves out its probe set or declares too few of its tokens) is not
  evidence of independence from it.
- **Plausible** (``check_plausible``): terms that the declared architecture could have produced.

  * no term constant, of rank one or less (a sketch ``T G`` with a random ``m x 3`` ``G``), or mostly exact
    zeros (a one-hot or sparse term): real terms are dense products of dense matrices;
  * ``shared-subspace``: every term of a model sees the probe rows through one ``d_model``-dimensional
    subspace (the column space of the embedded probe rows: every term's row space and, for ``attn_qk`` and
    ``attn_vo``, its column space). Where the probe rows outnumber the declared width, the verifier sketches
    those spaces with random vectors (drawn after the terms arrived, from ``seed``) and measures the energy
    outside the best ``d_model``-dimensional subspace. Noise, terms mixed from two models, and terms of a
    wider model under a narrower declared width put energy there; honest terms put rounding error there
    (docs/results/trust.md). Where the declared width is at least the probe rows this check cannot bite;
  * ``ffn-norm`` (``pawprint-terms/2`` only): the FFN term is a product of two whitened row sets, so its
    spectral norm is at most 1 (``owner._invariants``); noise or scaling pushes it above.

**Sketched groups** (the challenge asked for ``k x k`` public sketches, ``protocol._sketch``): the degenerate
checks apply to the sketches as sent (an owner who chooses its sketches also chooses their zeros and rank); the
FFN-norm bound does not hold for a sketch and is not checked; the shared subspace is checked per term name
(each name and side has its own projection, so the layers of one name share, on each side, the projected probe
rows plus the direction the centring adds: ``d_model + 1`` dimensions), and bites only where
``d_model + 1 < k`` (a sketch as wide as the model discloses its weight products, so a deployment protecting
wide models cannot have it). What the sketches cannot carry is checked on the terms themselves by ``pawprint
audit recompute``.

What these checks cannot see: another model's honest terms, or every term's probe rows permuted or rotated
the same way (``R T R^T`` keeps every rank, subspace and norm above). Those give an ``owner-attested`` receipt
whose terms are not the committed weights' own; only a recompute from the weights (``pawprint audit
recompute``) exposes them (docs/threat-model.md).

A failed check is a finding (one line, signed in the receipt); any finding makes the verdict
``insufficient-evidence`` (``protocol.INSUFFICIENT_EVIDENCE``), never ``independent``. Measured false-finding
rate on every honest model available: docs/results/trust.md (``python -m benchmarks.trust_table``).

Pure logic: numpy arrays in, findings out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protocol import Challenge, Manifest, Match
from protocol.terms import InvariantSet
from verifier._calibration import overall_verdict

# The method whose FFN term is bounded by 1 in spectral norm (both factors whitened).
WHITENED_METHOD_PREFIX = "pawprint-terms/2("


@dataclass(frozen=True)
class EvidenceRules:
    """The floors and tolerances of the evidence checks (documented in docs/threat-model.md)."""

    min_layers: int = 2  # the default layer policy's two layers: one layer is not enough to say independent
    min_probe_rows: int = 32  # probe tokens present in every group (and in common with every base), absolute
    # ``independent`` needs, for every base compared, this share of the base's present probe tokens in common
    min_common_fraction: float = 0.2
    max_zero_fraction: float = 0.5  # exact zeros in a term
    rank_one_tol: float = 1e-6  # second singular value of a sketch / the first, below: rank one
    subspace_tol: float = 1e-4  # energy outside the best d_model-dim subspace, above: implausible
    ffn_norm_max: float = 1.01  # spectral norm of a whitened FFN term, above: implausible
    sketch_margin: int = 32  # sketch vectors beyond d_model
    power_iterations: int = 30

    @property
    def rule(self) -> str:
        return (f"evidence/1(layers>={self.min_layers},rows>={self.min_probe_rows},"
                f"common>={self.min_common_fraction},zeros<={self.max_zero_fraction},"
                f"subspace<={self.subspace_tol},ffn-norm<={self.ffn_norm_max})")


DEFAULT_RULES = EvidenceRules()


def requested_layers(policy: str, n_layers: int) -> tuple[int, ...]:
    """The layers a challenge's layer policy asks of a model with ``n_layers`` layers (as the owner's agent
    resolves it: ``last2``, ``all`` or comma-separated indices, negative from the end)."""
    if policy == "last2":
        return tuple(range(max(0, n_layers - 2), n_layers))
    if policy == "all":
        return tuple(range(n_layers))
    out: list[int] = []
    for item in policy.split(","):
        if not item.strip():
            continue
        i = int(item)
        j = i + n_layers if i < 0 else i
        if 0 <= j < n_layers and j not in out:
            out.append(j)
    return tuple(out)


def _fact(manifest: Manifest, key: str) -> int | None:
    value = manifest.model.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_sufficient(manifest: Manifest, challenge: Challenge, rules: EvidenceRules = DEFAULT_RULES) -> list[str]:
    """Findings on the amount of evidence: groups, model facts, layers, probe coverage."""
    if not manifest.groups:
        return ["no term groups: nothing was compared"]
    findings: list[str] = []
    n_layers, width = _fact(manifest, "n_layers"), _fact(manifest, "d_model")
    if n_layers is None or width is None:
        findings.append("model facts: n_layers and d_model must be stated as positive integers")
    for i, g in enumerate(manifest.groups):
        where = f"group {i} ({g.probe_set.name})"
        if n_layers is not None:
            outside = [x for x in g.layers if x >= n_layers]
            if outside:
                findings.append(f"{where}: layers {outside} beyond the stated {n_layers} layers")
            try:
                wanted = requested_layers(challenge.layers, n_layers)
            except ValueError:
                wanted = ()
            missing = [x for x in wanted if x not in g.layers]
            if missing:
                findings.append(f"{where}: layers {missing} asked for by the challenge ({challenge.layers}) "
                                "are missing")
        if len(g.layers) < rules.min_layers:
            findings.append(f"{where}: {len(g.layers)} layer(s); at least {rules.min_layers} are needed")
        if g.rows < rules.min_probe_rows:
            findings.append(f"{where}: {g.rows} of {len(g.probe_set.tokens)} probe tokens present; the floor is "
                            f"{rules.min_probe_rows}")
    return findings


def _sketch_rng(seed: bytes) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(seed[:16].ljust(16, b"\0"), "little"))


def _outside_energy(vectors: np.ndarray, width: int) -> float:
    """Share of the energy of ``vectors`` (columns) outside their best ``width``-dimensional subspace."""
    s = np.linalg.svd(vectors, compute_uv=False)
    total = float(np.sum(s * s))
    return float(np.sum(s[width:] ** 2)) / total if total > 0 else 0.0


def _spectral_norm(t: np.ndarray, rng: np.random.Generator, iterations: int) -> float:
    """A lower bound on ``t``'s largest singular value (power iteration from a random start)."""
    v: np.ndarray = rng.standard_normal((t.shape[1],))
    v /= np.linalg.norm(v)
    sigma = 0.0
    for _ in range(iterations):
        u = t @ v
        sigma = float(np.linalg.norm(u))
        if sigma == 0.0:
            return 0.0
        w = t.T @ (u / sigma)
        n = float(np.linalg.norm(w))
        if n == 0.0:
            return sigma
        v = w / n
    return max(sigma, float(np.linalg.norm(t @ v)))


@dataclass
class GroupMeasures:
    """What ``check_plausible`` measured on one group (the benchmark reports the honest models' margins)."""

    max_zero_fraction: float = 0.0
    min_rank_ratio: float = 1.0  # second / first singular value of a 3-vector sketch, smallest over the terms
    max_ffn_norm: float = 0.0  # whitened method only
    outside_energy: float | None = None  # None: the declared width is at least the probe rows (check cannot bite)
    constant_terms: int = 0


def _outside(spaces: list[tuple[np.ndarray, bool]], m: int, width: int, rng: np.random.Generator,
             rules: EvidenceRules) -> float:
    """The energy of ``spaces`` (terms, and whether their column space counts too) outside the best
    ``width``-dimensional subspace, sketched with random combinations of their rows and columns."""
    n_spaces = sum(2 if both else 1 for _, both in spaces)
    k = max(2, math.ceil((width + rules.sketch_margin) / n_spaces))
    cols: list[np.ndarray] = []
    for t, both in spaces:
        scale = float(np.linalg.norm(t))
        for side in (t.T, t) if both else (t.T,):
            cols.append(side @ rng.standard_normal((m, k)) / scale)
    return _outside_energy(np.concatenate(cols, axis=1), width)


def measure_group(inv: InvariantSet, width: int | None, seed: bytes, rules: EvidenceRules = DEFAULT_RULES,
                  index: int = 0) -> tuple[GroupMeasures, list[str]]:
    """The measures of one group's terms and the findings they give: degenerate terms, the shared subspace,
    the FFN norm bound."""
    rng = _sketch_rng(seed + index.to_bytes(4, "little"))
    where = f"group {index}"
    found = GroupMeasures()
    findings: list[str] = []
    m = inv.group.side
    sketched = bool(inv.group.sketch)
    spaces: list[tuple[np.ndarray, bool]] = []  # (term, its column space too)
    named: dict[str, list[tuple[np.ndarray, bool]]] = {}  # the same, per term name (sketched groups)
    for (layer, name), term in sorted(inv.terms.items()):
        t = np.asarray(term, dtype=np.float64)
        label = f"{where} layer {layer} {name}"
        if float(np.ptp(t)) == 0.0:
            found.constant_terms += 1
            findings.append(f"{label}: constant")
            continue
        zeros = 1.0 - np.count_nonzero(t) / t.size
        found.max_zero_fraction = max(found.max_zero_fraction, zeros)
        if zeros > rules.max_zero_fraction:
            findings.append(f"{label}: {zeros:.0%} exact zeros (one-hot or sparse), not a product of dense weights")
            continue
        if m >= 2:
            s = np.linalg.svd(t @ rng.standard_normal((m, 3)), compute_uv=False)
            ratio = float(s[1] / s[0])
            found.min_rank_ratio = min(found.min_rank_ratio, ratio)
            if ratio <= rules.rank_one_tol:
                findings.append(f"{label}: rank one (a constant or outer-product term)")
                continue
        # a sketch of a whitened FFN term is not bounded (protocol._sketch): the bound is checked on the terms
        if name == "ffn" and inv.method_id.startswith(WHITENED_METHOD_PREFIX) and not sketched:
            norm = _spectral_norm(t, rng, rules.power_iterations)
            found.max_ffn_norm = max(found.max_ffn_norm, norm)
            if norm > rules.ffn_norm_max:
                findings.append(f"{label}: spectral norm {norm:.3g} > {rules.ffn_norm_max} (a whitened FFN term "
                                "is at most 1): noise or scaling")
        if name not in _OUTSIDE_SPAN.get(str(inv.model.get("family", "")), ()):
            spaces.append((t, name != "ffn"))
            named.setdefault(name, []).append((t, name != "ffn"))
    if sketched:
        # Sketches: each term name has its own public projections, so only the layers of one name share a
        # subspace: the projected probe rows and the all-ones direction the centring adds (width + 1).
        if width is not None and width + 1 < m:
            worst = 0.0
            for _name, of_name in sorted(named.items()):
                # the row side (B-projected) of every term; the column side (A-projected) of the attention terms
                sides = [[(t, False) for t, _ in of_name], [(t.T, False) for t, both in of_name if both]]
                for side in sides:
                    if side:
                        worst = max(worst, _outside(side, m, width + 1, rng, rules))
            found.outside_energy = worst
            findings += _subspace_finding(where, "a term's sketched energy", worst, width + 1, rules)
        return found, findings
    if width is not None and width < m and spaces:
        # Sketch every term's row space (and the attention terms' column spaces) with random combinations.
        found.outside_energy = _outside(spaces, m, width, rng, rules)
        findings += _subspace_finding(where, "the terms' energy", found.outside_energy, width, rules)
    return found, findings


def _subspace_finding(where: str, what: str, outside: float, dims: int, rules: EvidenceRules) -> list[str]:
    """The shared-subspace finding, if ``outside`` (the energy outside the best ``dims``-dimensional subspace)
    is above the tolerance."""
    if outside <= rules.subspace_tol:
        return []
    return [f"{where}: {outside:.2e} of {what} lies outside one {dims}-dimensional subspace (tolerance "
            f"{rules.subspace_tol}): noise, terms of several models, or a width other than the stated d_model"]


# Terms that are not bilinear in the probe rows for a family, so the shared-subspace check cannot hold them to
# ``d_model`` dimensions: QK-norm normalises each head's query and key rows (Qwen3, OLMo-2, Gemma-3), and latent
# attention normalises the compressed rows before the query and value maps (DeepSeek). Measured: honest tiny
# gemma3_text and deepseek_v3 models put 1e-3 of the energy outside (docs/results/trust.md). A declared family
# only drops these terms from this one check; every other check and term still applies.
_OUTSIDE_SPAN: dict[str, tuple[str, ...]] = {
    "qwen3": ("attn_qk",), "olmo2": ("attn_qk",), "gemma3_text": ("attn_qk",),
    "deepseek_v3": ("attn_qk", "attn_vo"),
    # measured on honest tiny models, 3 seeds each (400 probe rows, d = 64): qwen3_moe's attn_qk alone puts
    # 3.0-3.4e-3 outside (its other terms ~6e-15); deepseek_v2's attn_qk 8.6-9.5e-4 and attn_vo 8.4-9.0e-4
    # (its ffn ~6e-15); tolerance 1e-4, so without these entries every honest model of either family is refused
    "qwen3_moe": ("attn_qk",), "deepseek_v2": ("attn_qk", "attn_vo"),
}


def check_plausible(inv: InvariantSet, width: int | None, seed: bytes, rules: EvidenceRules = DEFAULT_RULES,
                    index: int = 0) -> list[str]:
    """Findings on one group's terms (``measure_group``)."""
    return measure_group(inv, width, seed, rules, index)[1]


def check_matches(matches: Sequence[Match], bases: dict[bytes, tuple[str, dict[str, int]]],
                  rules: EvidenceRules = DEFAULT_RULES) -> list[str]:
    """Findings on the comparisons when the verdict would be ``independent``: every base considered must have
    been compared, on at least ``min_common_fraction`` of its present probe tokens (and ``min_probe_rows``).
    ``bases``: each base's name and present probe tokens per probe set id, by entry."""
    if overall_verdict([m.verdict for m in matches]) != "independent":
        return []
    findings: list[str] = []
    by_entry = {m.entry: m for m in matches}
    for entry, (name, present) in bases.items():
        m = by_entry.get(entry)
        if m is None:
            findings.append(f"base {name}: not compared (no probe set and method in common); independent needs "
                            "every base compared")
            continue
        floor = max(rules.min_probe_rows, math.ceil(rules.min_common_fraction * present.get(m.probe_set_id, 0)))
        if m.common_probe_tokens < floor:
            findings.append(f"base {m.name}: {m.common_probe_tokens} common probe tokens; independent needs "
                            f"{floor}")
    return findings


def evidence_findings(manifest: Manifest, challenge: Challenge, suspect: Sequence[InvariantSet], seed: bytes,
                      rules: EvidenceRules = DEFAULT_RULES) -> list[str]:
    """Every finding before comparison (sufficiency, then plausibility of each group), in a fixed order."""
    findings = check_sufficient(manifest, challenge, rules)
    width = _fact(manifest, "d_model")
    for i, inv in enumerate(suspect):
        findings += check_plausible(inv, width, seed, rules, i)
    return findings
