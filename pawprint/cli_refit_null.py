"""``pawprint verifier refit-null``: a null refitted from a registry's own independent bases (the verifier extra).

Every pair of the registry's unrevoked bases (latest checkpoint) is scored as the service scores a submission
against a base; pairs the current null (``--null``, default the shipped one) calls ``derived`` (K = 1), and pairs
the log links, are excluded and listed; the rest are fitted as a v2 null (``verifier._refit``), written to
``--out`` (canonical JSON: same registry, same bytes; its ``source`` names the registry's origin and checkpoint),
and checked leave-one-base-out against the nominal 1 % and 5 %. Fewer than ``--min-pairs`` independent pairs
(default 10) is refused with exit 2 and nothing written. The file is used with ``verifier serve --null FILE``
(pin it with ``--null-sha256``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pawprint._common import (
    EXIT_OK,
    CommandError,
    about,
    null_model,
    thresholds,
    verdict_options,
    write_json,
)

if TYPE_CHECKING:
    from verifier._refit import BasePair

# verifier._refit.MIN_PAIRS and FIT_MIN_PAIRS, repeated so that building the parser imports no verifier
MIN_PAIRS = 10
FIT_MIN_PAIRS = 3


def _min_pairs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < FIT_MIN_PAIRS:
        raise argparse.ArgumentTypeError(f"must be at least {FIT_MIN_PAIRS} (no null is fitted on fewer pairs)")
    return value


def _write(path: Path, text: str) -> None:
    """``text`` to ``path`` atomically (a temp file beside it, then renamed)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from e


def _pct(rate: dict[str, Any]) -> str:
    if not rate["of"]:
        return "-"
    return f"{rate['count']}/{rate['of']} ({100.0 * rate['count'] / rate['of']:.1f} %)"


def cmd_refit_null(args: argparse.Namespace) -> int:
    from verifier import Registry, load_null
    from verifier._refit import (
        EXCLUDED,
        INCOMPARABLE,
        INDEPENDENT,
        RegisteredBase,
        current_exponents,
        fit_registry_null,
        leave_one_out,
        overlap_exponents,
        score_base_pairs,
    )

    rule = thresholds(args)
    current = null_model(args.null)
    out = Path(args.out)
    if out.is_dir():
        raise CommandError(f"--out {out} is a directory: give the null file's name")
    if not out.parent.is_dir():
        raise CommandError(f"cannot write {out}: its directory does not exist")
    with about(args.data):
        registry = Registry(args.data, create=False)
        try:
            snap = registry.log_snapshot(terms=False)
            bases = [RegisteredBase(m, e.index, e.linked_to)
                     for m, e in zip(registry.base_models(snap.entries), snap.entries, strict=True)]
            origin = registry.origin
        finally:
            registry.close()
    pairs = score_base_pairs(bases, current, rule)
    indep: list[BasePair] = [p for p in pairs if p.status == INDEPENDENT]
    excluded = [p for p in pairs if p.status == EXCLUDED]
    incomparable = [p for p in pairs if p.status == INCOMPARABLE]
    if len(indep) < args.min_pairs:
        raise CommandError(
            f"{args.data}: {len(indep)} independent base pairs ({len(bases)} bases, {len(excluded)} pairs excluded, "
            f"{len(incomparable)} incomparable); a refitted null needs at least {args.min_pairs} (--min-pairs)")
    keep = current_exponents(current, load_null())
    where = (f"registry {origin} at checkpoint size {snap.state.size} root {snap.state.root.hex()[:16]}")

    def source(population: int, note: str) -> str:
        return (f"refit from {where}: {population} independent base pairs (pairs the null {current.null_id} calls "
                f"derived at K = 1, or the log links, excluded with the later base's pairs); spread scaled by "
                f"(min(m, ref_m)/ref_m)^-a per term, exponents {note}; pawprint verifier refit-null")

    note = ("kept with the current v3 null's sampling spread; the floor, mean and correlation refitted"
            if current.floor is not None else overlap_exponents(indep, keep).note)
    null, exps = fit_registry_null(indep, current, keep, source(len(indep), note))
    loo = leave_one_out(indep, lambda pop: fit_registry_null(pop, current, keep, "leave-one-out")[0])
    _write(out, null.to_json())
    summary = loo.summary()
    if args.json:
        write_json({
            "out": str(out), "null_id": null.null_id, "source": null.source, "current_null": current.null_id,
            "bases": len(bases), "min_pairs": args.min_pairs, "ref_m": null.ref_m, "pairs_fitted": null.pairs,
            "exponents": {"values": dict(exps.values), "rule": exps.rule, "note": exps.note},
            "terms": {t: {"mean": n.mean, "sd": n.sd, "samples": n.samples} for t, n in null.terms.items()},
            "floor": None if null.floor is None else dict(null.floor),
            "counts": {"independent": len(indep), "excluded": len(excluded), "incomparable": len(incomparable)},
            "pairs": [p.as_dict() for p in pairs],
            "leave_one_out": {**summary, "per_test": [{"left_out": t.left_out, "a": t.a, "b": t.b, "p": t.p,
                                                       "p_current": t.p_current} for t in loo.tests]},
        })
        return EXIT_OK
    print(f"{args.data}: {len(bases)} bases, {len(pairs)} pairs: {len(indep)} independent, {len(excluded)} "
          f"excluded, {len(incomparable)} incomparable")
    for p in excluded:
        print(f"  excluded {p.a} | {p.b}: {p.reason}")
    for p in incomparable:
        print(f"  incomparable {p.a} | {p.b}: {p.reason}")
    print(f"wrote {out} ({null.null_id}): {null.pairs} pairs, ref_m {null.ref_m}, exponents {exps.note}")
    for t, n in null.terms.items():
        floor = "" if null.floor is None else f"  floor {null.floor[t]:.5f}"
        print(f"  {t:8s} mean {n.mean:+.5f}  sd {n.sd:.5f}{floor}  a {exps.values[t]:.4f}  ({n.samples} layer scores)")
    print(f"leave-one-base-out check: {summary['tests']} tests (each independent pair with each of its bases left "
          "out of the fit; K = 1)")
    print(f"  refitted null:          p <= 0.01 {_pct(summary['refit']['le_0.01']):>18s} (nominal 1 %)   "
          f"p <= 0.05 {_pct(summary['refit']['le_0.05']):>18s} (nominal 5 %)")
    print(f"  current null, same p.:  p <= 0.01 {_pct(summary['current']['le_0.01']):>18s}                "
          f"p <= 0.05 {_pct(summary['current']['le_0.05']):>18s}")
    if loo.untested:
        print(f"  not tested (fewer than 3 pairs without them): {', '.join(loo.untested)}")
    return EXIT_OK


def add_parser(ver: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pawprint verifier refit-null`` (added to ``pawprint verifier``'s subcommands)."""
    rf = ver.add_parser("refit-null", help="fit a null on the registry's own independent bases, with a "
                                           "leave-one-out calibration check")
    rf.add_argument("--data", required=True, metavar="DIR", help="the verifier's data directory (its registry)")
    rf.add_argument("--out", required=True, metavar="NULL.json", help="where to write the refitted null")
    rf.add_argument("--min-pairs", type=_min_pairs, default=MIN_PAIRS, metavar="N",
                    help=f"refuse with fewer independent base pairs (default {MIN_PAIRS}, at least {FIT_MIN_PAIRS})")
    rf.add_argument("--json", action="store_true")
    verdict_options(rf)  # --null: the current null, which decides which pairs are derived (--derived-p)
    rf.set_defaults(func=cmd_refit_null)
