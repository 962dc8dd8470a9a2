"""Probe sets: named, versioned lists of token strings, and their mapping to one model's token ids.

The invariant terms are computed on the embedding rows of n probe tokens (SCIENCE.md, "Probe tokens").
Ids mean nothing across tokenizers, so a probe set is a list of token *strings* in the canonical spelling of
:mod:`owner._vocab`; each model maps the strings to its own ids through its own tokenizer files, and strings
it lacks are reported and masked. This cancels vocabulary permutation and survives vocabulary extension.

A probe set's id is the SHA-256 of its canonical msgpack encoding (name, rule, tokens, version), so the id
records the selection rule and every token, in order.

Selection rules (the rule name carries its parameters, so a new parameter means a new name):

- ``words-hash-v1``: word-initial tokens (``▁`` + at least 3 letters, ``str.isalpha``), ordered by the
  SHA-256 of their canonical spelling, first n. Whether a token is picked depends only on its string and on
  how many qualifying tokens hash below it, so two tokenizers pick overlapping sets in the same order.
- ``all-hash-v1``: every canonical, non-special token, same hash order.
- ``rare-ids-v1``: the plain-word tokens (as in ``words-hash-v1``) with the highest ids. BPE assigns ids in
  merge order, so high ids are late, rare merges: an offline stand-in for HuRef's "least frequent tokens on
  English Wikipedia" (rare tokens move least during fine-tuning). It is tokenizer-specific by design: two
  unrelated tokenizers pick nearly disjoint sets, and WordPiece ids follow no such order.

Why ``rare-ids-v1`` is the default: measured on the trained zoo (``benchmarks/zoo_lineage.py``; results in
``docs/results/zoo_lineage.md`` at n=4096 and ``docs/results/zoo_lineage_rules_n512.md`` at n=512). At n=512,
where the rules select different sets, ``rare-ids-v1`` separates every llama derivative (heavy continued
pretraining included) from every unrelated pair involving llama with the largest per-term margin (+0.056,
against +0.043 for ``words-hash-v1`` and +0.041 for ``all-hash-v1``) and has the lowest largest unrelated score
over the whole zoo (0.49 against 0.60). At n=4096 the zoo's 3000-token vocabularies have fewer qualifying
plain words than n, so ``rare-ids-v1`` and ``words-hash-v1`` pick the same set and score identically. Like
HuRef's selection it favours rare tokens, which move least in fine-tuning. Its cost: it is tokenizer-specific,
so a model with an unrelated tokenizer shares few of a base's rare tokens and cannot be compared at all (a
clear error), which is the right answer for lineage; ``words-hash-v1`` remains for cross-tokenizer studies.

A probe set is a ``protocol.ProbeSpec`` (the one probe-set type: its id and validation live there). Nothing here
reads weights or sends anything; the only file I/O is :func:`save_probe_set` / :func:`load_probe_set` and reading
tokenizer files through :func:`load_vocabulary`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from owner._vocab import (
    TOKENIZER_FILES,
    VOCAB_STYLES,
    WORD_START,
    VocabStyle,
    Vocabulary,
    canonical_token,
    load_vocabulary,
)
from owner.errors import TokenizerError
from protocol import JsonError, ProbeSpec, ProtocolError, loads_strict

__all__ = [
    "DEFAULT_RULE",
    "PROBE_RULES",
    "PROBE_SET_FORMAT",
    "TOKENIZER_FILES",
    "VOCAB_STYLES",
    "WORD_START",
    "ProbeMapping",
    "VocabStyle",
    "Vocabulary",
    "build_pair_probe_set",
    "build_probe_set",
    "canonical_token",
    "load_probe_set",
    "load_vocabulary",
    "map_probes",
    "save_probe_set",
]

PROBE_SET_FORMAT = "pawprint-probe-set/1"
DEFAULT_RULE = "rare-ids-v1"
_FILE_KEYS = frozenset({"format", "id", "name", "version", "rule", "tokens"})


def save_probe_set(probes: ProbeSpec, path: Path) -> None:
    """Write ``probes`` as a JSON probe set file that :func:`load_probe_set` verifies."""
    doc = {"format": PROBE_SET_FORMAT, "id": probes.id, "name": probes.name, "version": probes.version,
           "rule": probes.rule, "tokens": list(probes.tokens)}
    Path(path).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def load_probe_set(path: Path) -> ProbeSpec:
    """Read a probe set file; the stored id must match the contents."""
    path = Path(path)
    try:
        doc = loads_strict(path.read_bytes())
    except (OSError, JsonError) as e:
        raise TokenizerError(f"{path}: not a readable probe set file ({e})") from e
    if not isinstance(doc, dict) or set(doc) != _FILE_KEYS or doc["format"] != PROBE_SET_FORMAT:
        raise TokenizerError(
            f"{path}: not a probe set file; expected a JSON object with format {PROBE_SET_FORMAT!r} "
            f"and keys {sorted(_FILE_KEYS)}"
        )
    if not isinstance(doc["tokens"], list):
        raise TokenizerError(f"{path}: 'tokens' must be a list of strings")
    try:
        probes = ProbeSpec(doc["name"], doc["version"], doc["rule"], tuple(doc["tokens"]))
    except ProtocolError as e:
        raise TokenizerError(f"{path}: malformed probe set ({e})") from e
    if doc["id"] != probes.id:
        raise TokenizerError(
            f"{path}: stored probe set id {doc['id']!r} does not match its contents ({probes.id}); "
            "the file was altered"
        )
    return probes


# ---------------------------------------------------------------------------------------------------------
# Selection rules


def _hash_key(token: str) -> tuple[bytes, str]:
    return hashlib.sha256(token.encode("utf-8")).digest(), token


def _is_plain_word(token: str) -> bool:
    return token.startswith(WORD_START) and len(token) >= 4 and token[1:].isalpha()


def _words_hash(vocab: Vocabulary, n: int) -> list[str]:
    return sorted(filter(_is_plain_word, vocab.token_ids), key=_hash_key)[:n]


def _all_hash(vocab: Vocabulary, n: int) -> list[str]:
    return sorted(vocab.token_ids, key=_hash_key)[:n]


def _rare_ids(vocab: Vocabulary, n: int) -> list[str]:
    words = [t for t in vocab.token_ids if _is_plain_word(t)]
    return sorted(words, key=lambda t: (-vocab.token_ids[t], t))[:n]


_RULES: dict[str, Callable[[Vocabulary, int], list[str]]] = {
    "words-hash-v1": _words_hash,
    "all-hash-v1": _all_hash,
    "rare-ids-v1": _rare_ids,
}
PROBE_RULES: tuple[str, ...] = tuple(_RULES)


def build_probe_set(
    vocab: Vocabulary, n: int = 4096, rule: str = DEFAULT_RULE, name: str | None = None, version: int = 1
) -> ProbeSpec:
    """Select up to ``n`` probe tokens from ``vocab`` by ``rule`` (one of ``PROBE_RULES``).

    If fewer than ``n`` tokens qualify, all of them are returned: ``len`` of the result shows it.
    The default name is ``"<rule>-n<n>"``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    try:
        select = _RULES[rule]
    except KeyError:
        raise ValueError(f"unknown probe rule {rule!r}; expected one of {', '.join(PROBE_RULES)}") from None
    return ProbeSpec(name or f"{rule}-n{n}", version, rule, tuple(select(vocab, n)))


def _rank_of(vocab: Vocabulary, tokens: list[str]) -> dict[str, int]:
    """Each of ``tokens``' rank in ``vocab`` by descending id (0 = the highest id: the latest, rarest merge)."""
    return {t: r for r, t in enumerate(sorted(tokens, key=lambda t: (-vocab.token_ids[t], t)))}


def build_pair_probe_set(
    a: Vocabulary, b: Vocabulary, n: int = 4096, rule: str = DEFAULT_RULE, version: int = 1
) -> ProbeSpec:
    """The probe set for comparing two models, the same whichever comes first (``compare A B`` == ``compare B A``).

    Only tokens both vocabularies have, under the canonical spelling, are candidates, so neither side is computed
    on rows the other lacks (a model's terms depend on every probe row it is computed on: a vocabulary-pruned copy
    scored on the other side's probe set would be compared on different rows). Among them ``rule`` selects as
    :func:`build_probe_set` does, made symmetric: the hash rules depend only on the strings; ``rare-ids-v1``
    orders the common plain words by the sum of their ranks by descending id in the two vocabularies (rare in
    both first, ties by string). The rule is recorded as ``<rule>+pair`` and the name as ``<rule>-pair-n<n>``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    if rule not in _RULES:
        raise ValueError(f"unknown probe rule {rule!r}; expected one of {', '.join(PROBE_RULES)}")
    common = [t for t in a.token_ids if t in b.token_ids]
    if rule == "rare-ids-v1":
        words = [t for t in common if _is_plain_word(t)]
        ra, rb = _rank_of(a, words), _rank_of(b, words)
        tokens = sorted(words, key=lambda t: (ra[t] + rb[t], _hash_key(t)))[:n]
    else:
        tokens = _RULES[rule](Vocabulary(a.source, a.style, a.size, {t: a.token_ids[t] for t in common}), n)
    return ProbeSpec(f"{rule}-pair-n{n}", version, f"{rule}+pair", tuple(tokens))


# ---------------------------------------------------------------------------------------------------------
# Mapping a probe set into one model's vocabulary


@dataclass(frozen=True)
class ProbeMapping:
    """Where each probe token sits in one model's vocabulary (``None`` where the model lacks it)."""

    probes: ProbeSpec
    ids: tuple[int | None, ...]
    source: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(self.ids))
        if len(self.ids) != len(self.probes.tokens):
            raise ValueError(f"{len(self.ids)} ids for {len(self.probes.tokens)} probe tokens")

    @property
    def present(self) -> tuple[bool, ...]:
        """Per probe token, whether the model has it."""
        return tuple(i is not None for i in self.ids)

    @property
    def coverage(self) -> float:
        """Fraction of the probe tokens the model has."""
        return sum(self.present) / len(self.ids) if self.ids else 0.0

    @property
    def missing(self) -> tuple[str, ...]:
        """The probe tokens the model lacks, in probe order."""
        return tuple(t for t, i in zip(self.probes.tokens, self.ids, strict=True) if i is None)

    def present_ids(self) -> tuple[int, ...]:
        """The model's ids of the probe tokens it has, in probe order."""
        return tuple(i for i in self.ids if i is not None)

    def present_tokens(self) -> tuple[str, ...]:
        """The probe tokens the model has, in probe order (aligned with :meth:`present_ids`)."""
        return tuple(t for t, i in zip(self.probes.tokens, self.ids, strict=True) if i is not None)


def map_probes(probes: ProbeSpec, vocab: Vocabulary, min_tokens: int = 16) -> ProbeMapping:
    """Map ``probes`` to ``vocab``'s ids; fewer than ``min_tokens`` present (or none) is an error."""
    mapping = ProbeMapping(probes, tuple(vocab.get(t) for t in probes.tokens), vocab.source)
    found = len(mapping.present_ids())
    what = f"probe set {probes.name!r} ({probes.id[:16]}, {len(probes)} tokens)"
    if found == 0:
        raise TokenizerError(f"{vocab.source}: this vocabulary has none of the tokens of {what}")
    if found < min_tokens:
        raise TokenizerError(
            f"{vocab.source}: this vocabulary has only {found} of the tokens of {what}; "
            f"at least {min_tokens} are needed"
        )
    return mapping

