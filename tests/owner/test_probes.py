"""Probe sets and canonical vocabularies: real tokenizers of each convention, files in each format."""

from __future__ import annotations

import hashlib
import json
import random
import struct
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from owner._probes import (
    DEFAULT_RULE,
    PROBE_RULES,
    PROBE_SET_FORMAT,
    Vocabulary,
    build_probe_set,
    canonical_token,
    load_probe_set,
    load_vocabulary,
    map_probes,
    save_probe_set,
)
from owner._vocab import _bytes_to_unicode
from owner.errors import TokenizerError
from protocol import MessageError, ProbeSpec, encode
from zoo.corpus import docstring_corpus
from zoo.tokenizers_ import TOKENIZER_STYLES, TokenizerStyle, train_tokenizer

VOCAB_SIZE = 600


@pytest.fixture(scope="module")
def tokenizers() -> dict[TokenizerStyle, Tokenizer]:
    texts = docstring_corpus()[:300]
    return {s: train_tokenizer(texts, s, VOCAB_SIZE) for s in TOKENIZER_STYLES}


@pytest.fixture(scope="module")
def tok_dirs(tokenizers: dict[TokenizerStyle, Tokenizer], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[TokenizerStyle, Path]:
    out = {}
    for style, tok in tokenizers.items():
        d = tmp_path_factory.mktemp(style)
        tok.save(str(d / "tokenizer.json"))
        out[style] = d
    return out


@pytest.fixture(scope="module")
def vocabs(tok_dirs: dict[TokenizerStyle, Path]) -> dict[TokenizerStyle, Vocabulary]:
    return {s: load_vocabulary(d) for s, d in tok_dirs.items()}


def _tok_json(d: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    return data


def _write_json(d: Path, name: str, data: object) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return d


# ---------------------------------------------------------------------------------------------------------
# canonical spelling


def test_canonical_token_conventions() -> None:
    assert canonical_token("Ġthe", "bytelevel") == "▁the"
    assert canonical_token("the", "bytelevel") == "the"
    assert canonical_token("Ċ", "bytelevel") == "\n"
    assert canonical_token("ĠĠ", "bytelevel") == "▁▁"
    assert canonical_token("ĠcafÃ©", "bytelevel") == "▁café"  # two bytes of é
    assert canonical_token("Ã", "bytelevel") is None  # a lone lead byte is not UTF-8 on its own
    assert canonical_token("▁the", "bytelevel") is None  # raw text, not in the byte table
    assert canonical_token("▁the", "metaspace") == "▁the"
    assert canonical_token("▁the", "unigram") == "▁the"
    assert canonical_token("<0x41>", "metaspace") is None
    assert canonical_token("##ing", "wordpiece") == "ing"
    assert canonical_token("the", "wordpiece") == "▁the"
    assert canonical_token("##", "wordpiece") == "▁##"
    assert canonical_token("@@ing", "wordpiece", continuing_prefix="@@") == "ing"
    assert canonical_token("▁e\u0301t\u00e9", "metaspace") == "▁\u00e9t\u00e9"  # NFC
    assert canonical_token("", "metaspace") is None
    with pytest.raises(ValueError, match="unknown vocabulary style"):
        canonical_token("x", "bpe")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12))
def test_bytelevel_spelling_round_trips(text: str) -> None:
    table = _bytes_to_unicode()
    spelled = "".join(table[b] for b in (" " + text).encode("utf-8"))
    assert canonical_token(spelled, "bytelevel") == "▁" + unicodedata.normalize("NFC", text).replace(" ", "▁")


def test_same_word_same_string_in_every_style(
    tokenizers: dict[TokenizerStyle, Tokenizer], vocabs: dict[TokenizerStyle, Vocabulary]
) -> None:
    raw: dict[TokenizerStyle, tuple[str, str]] = {
        "bytelevel": ("Ġ{}", "{}"), "metaspace": ("▁{}", "{}"), "wordpiece": ("{}", "##{}"),
    }
    for word in ("the", "function"):
        for style, (initial, _) in raw.items():
            tok_id = tokenizers[style].token_to_id(initial.format(word))
            assert tok_id is not None
            assert vocabs[style].get("▁" + word) == tok_id
    for style, (_, cont) in raw.items():
        assert vocabs[style].get("ing") == tokenizers[style].token_to_id(cont.format("ing"))
    assert {v.style for v in vocabs.values()} == {"bytelevel", "metaspace", "wordpiece"}


def test_specials_and_partial_bytes_excluded(
    tokenizers: dict[TokenizerStyle, Tokenizer], vocabs: dict[TokenizerStyle, Vocabulary]
) -> None:
    specials = {
        "bytelevel": ["<|endoftext|>", "<|pad|>"],
        "metaspace": ["<unk>", "<s>", "</s>"],
        "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    }
    for style, vocab in vocabs.items():
        tok = tokenizers[style]
        special_ids = {tok.token_to_id(s) for s in specials[style]}
        assert not special_ids & set(vocab.token_ids.values())
        assert not any(s in t for t in vocab.token_ids for s in specials[style])
        assert vocab.size == tok.get_vocab_size() == VOCAB_SIZE
        assert vocab.collisions == 0
    # 128 byte-level pieces are continuation/lead bytes of multi-byte characters: not UTF-8 on their own
    assert vocabs["bytelevel"].excluded == 2 + 128
    assert len(vocabs["bytelevel"]) == VOCAB_SIZE - 130


def test_collision_keeps_lowest_id(tmp_path: Path) -> None:
    pieces = [("▁e\u0301", 7), ("▁\u00e9", 9), ("▁the", 3)]
    vocab = Vocabulary.from_pieces(pieces, "metaspace", source=tmp_path / "x")
    assert dict(vocab.token_ids) == {"▁\u00e9": 7, "▁the": 3}
    assert vocab.collisions == 1
    assert vocab.size == 3


# ---------------------------------------------------------------------------------------------------------
# file formats


def test_vocab_json_and_vocab_txt_match_tokenizer_json(
    tokenizers: dict[TokenizerStyle, Tokenizer], vocabs: dict[TokenizerStyle, Vocabulary], tmp_path: Path
) -> None:
    expected_file = {"bytelevel": "vocab.json", "metaspace": "vocab.json", "wordpiece": "vocab.txt"}
    for style, tok in tokenizers.items():
        d = tmp_path / style
        d.mkdir()
        tok.model.save(str(d))  # GPT-2 vocab.json + merges.txt, or BERT vocab.txt
        vocab = load_vocabulary(d)
        assert vocab.source == d / expected_file[style]
        assert vocab.style == style
        assert dict(vocab.token_ids) == dict(vocabs[style].token_ids)
        assert vocab.size == VOCAB_SIZE


def test_tokenizer_json_is_preferred(tok_dirs: dict[TokenizerStyle, Path], tmp_path: Path) -> None:
    d = tmp_path / "both"
    d.mkdir()
    (d / "tokenizer.json").write_bytes((tok_dirs["wordpiece"] / "tokenizer.json").read_bytes())
    (d / "vocab.txt").write_text("[PAD]\nhello\n", encoding="utf-8")
    assert load_vocabulary(d).source == d / "tokenizer.json"


def test_config_specials_excluded_from_vocab_txt(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\nENDTOKEN\nthe\n##ing\nhello\n", encoding="utf-8")
    _write_json(tmp_path, "special_tokens_map.json", {"eos_token": {"content": "ENDTOKEN"}})
    vocab = load_vocabulary(tmp_path)
    assert dict(vocab.token_ids) == {"▁the": 2, "ing": 3, "▁hello": 4}
    assert (vocab.size, vocab.excluded) == (5, 2)


def test_nested_bytelevel_and_llama_style_metaspace(tok_dirs: dict[TokenizerStyle, Path], tmp_path: Path,
                                                   vocabs: dict[TokenizerStyle, Vocabulary]) -> None:
    data = _tok_json(tok_dirs["bytelevel"])
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    data["decoder"] = None
    assert load_vocabulary(_write_json(tmp_path / "nested", "tokenizer.json", data)).style == "bytelevel"

    data = _tok_json(tok_dirs["metaspace"])  # LLaMA's tokenizer.json has no Metaspace step
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    data["pre_tokenizer"] = None
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    vocab = load_vocabulary(_write_json(tmp_path / "llama", "tokenizer.json", data))
    assert vocab.style == "metaspace"
    assert dict(vocab.token_ids) == dict(vocabs["metaspace"].token_ids)


def test_unigram_tokenizer_json(tmp_path: Path) -> None:
    data = {
        "added_tokens": [{"id": 0, "content": "<unk>", "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": True,
                  "vocab": [["<unk>", 0.0], ["▁the", -1.0], ["ing", -2.0], ["<0x41>", -3.0], ["</s>", 0.0]]},
    }
    vocab = load_vocabulary(_write_json(tmp_path, "tokenizer.json", data))
    assert vocab.style == "unigram"
    assert dict(vocab.token_ids) == {"▁the": 1, "ing": 2}
    assert (vocab.size, vocab.excluded) == (5, 3)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes | float) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3) + _varint(value)


def _sentencepiece_model(pieces: list[tuple[str, int | None]], model_type: int | None) -> bytes:
    out = b""
    for i, (piece, ptype) in enumerate(pieces):
        msg = _field(1, piece.encode("utf-8")) + _field(2, -float(i))
        if ptype is not None:
            msg += _field(3, ptype)
        out += _field(1, msg)
    trainer = _field(1, b"corpus.txt") + _field(2, b"m")
    if model_type is not None:
        trainer += _field(3, model_type)
    out += _field(2, trainer + _field(4, 32000))
    out += _field(3, _field(1, b"nmt_nfkc") + _field(3, 1))  # normalizer_spec: skipped
    return out


SP_PIECES: list[tuple[str, int | None]] = [
    ("<unk>", 2), ("<s>", 3), ("</s>", 3), ("<0x41>", 6), ("▁the", None), ("▁function", 1), ("ing", 1),
    ("▁custom", 4), ("▁e\u0301t\u00e9", 1), ("extra", 5),
]


@pytest.mark.parametrize(("model_type", "style"), [(None, "unigram"), (1, "unigram"), (2, "metaspace")])
def test_sentencepiece_model_parsed_by_hand(tmp_path: Path, model_type: int | None, style: str) -> None:
    (tmp_path / "tokenizer.model").write_bytes(_sentencepiece_model(SP_PIECES, model_type))
    vocab = load_vocabulary(tmp_path)
    assert vocab.source == tmp_path / "tokenizer.model"
    assert vocab.style == style
    assert dict(vocab.token_ids) == {"▁the": 4, "▁function": 5, "ing": 6, "▁custom": 7, "▁\u00e9t\u00e9": 8}
    assert (vocab.size, vocab.excluded) == (10, 5)


def test_corrupt_sentencepiece_model(tmp_path: Path) -> None:
    blob = _sentencepiece_model(SP_PIECES, 2)
    f = tmp_path / "tokenizer.model"
    for bad in (blob[: len(blob) // 2], b"", b"\x0f\x00", "▁".encode() * 3):
        f.write_bytes(bad)
        with pytest.raises(TokenizerError, match=str(f)):
            load_vocabulary(tmp_path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=rf"{tmp_path}: no tokenizer files found.*tokenizer\.json"):
        load_vocabulary(tmp_path)
    with pytest.raises(TokenizerError, match="not a directory"):
        load_vocabulary(tmp_path / "absent")
    bad = {
        "tokenizer.json": ["{not json", "[1, 2]", '{"model": {"type": "WordLevel", "vocab": {"a": 0}}}',
                           '{"model": {"type": "BPE", "vocab": {"a": "zero"}}}',
                           '{"model": {"type": "Unigram", "vocab": {"a": 0}}}'],
        "vocab.json": ["{", '["a", "b"]', "{}"],
    }
    for name, contents in bad.items():
        d = tmp_path / name.replace(".", "_")
        d.mkdir()
        for text in contents:
            (d / name).write_text(text, encoding="utf-8")
            with pytest.raises(TokenizerError, match=str(d / name)):
                load_vocabulary(d)
    d = tmp_path / "latin1"
    d.mkdir()
    (d / "vocab.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(TokenizerError, match=str(d / "vocab.txt")):
        load_vocabulary(d)


def test_onnx_layouts(tok_dirs: dict[TokenizerStyle, Path], tmp_path: Path) -> None:
    tok_bytes = (tok_dirs["metaspace"] / "tokenizer.json").read_bytes()
    (tmp_path / "tokenizer.json").write_bytes(tok_bytes)
    (tmp_path / "model.onnx").write_bytes(b"")
    assert load_vocabulary(tmp_path / "model.onnx").source == tmp_path / "tokenizer.json"
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    assert load_vocabulary(tmp_path / "onnx").source == tmp_path / "tokenizer.json"


# ---------------------------------------------------------------------------------------------------------
# permutation and extension of the vocabulary


@pytest.mark.parametrize("style", TOKENIZER_STYLES)
def test_permuted_vocabulary_keeps_strings_and_moves_ids(
    style: TokenizerStyle, tok_dirs: dict[TokenizerStyle, Path], vocabs: dict[TokenizerStyle, Vocabulary],
    tmp_path: Path,
) -> None:
    data = _tok_json(tok_dirs[style])
    perm = list(range(VOCAB_SIZE))
    random.Random(0).shuffle(perm)
    data["model"]["vocab"] = {t: perm[i] for t, i in data["model"]["vocab"].items()}
    for a in data["added_tokens"]:
        a["id"] = perm[a["id"]]
    permuted = load_vocabulary(_write_json(tmp_path, "tokenizer.json", data))
    base = vocabs[style]
    assert set(permuted.token_ids) == set(base.token_ids)
    assert all(permuted.token_ids[t] == perm[i] for t, i in base.token_ids.items())
    # The hash rules depend on strings only: the same probe set, mapped to the permuted ids.
    probes = build_probe_set(base, n=64, rule="words-hash-v1")
    assert build_probe_set(permuted, n=64, rule="words-hash-v1") == probes
    m0, m1 = map_probes(probes, base), map_probes(probes, permuted)
    assert m1.ids == tuple(perm[i] for i in m0.present_ids())
    raw_the = {"bytelevel": "Ġthe", "metaspace": "▁the", "wordpiece": "the"}[style]
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).token_to_id(raw_the) == permuted.get("▁the")


def test_extended_vocabulary_keeps_existing_mapping(
    tok_dirs: dict[TokenizerStyle, Path], vocabs: dict[TokenizerStyle, Vocabulary], tmp_path: Path
) -> None:
    data = _tok_json(tok_dirs["metaspace"])
    new = ["▁zyzzyva", "▁quokka", "▁繁體", "qux"]
    for k, t in enumerate(new):
        data["model"]["vocab"][t] = VOCAB_SIZE + k
    data["added_tokens"].append({"id": VOCAB_SIZE + len(new), "content": "<|im_start|>", "special": True,
                                 "single_word": False, "lstrip": False, "rstrip": False, "normalized": False})
    extended = load_vocabulary(_write_json(tmp_path, "tokenizer.json", data))
    base = vocabs["metaspace"]
    assert {t: extended.token_ids[t] for t in base.token_ids} == dict(base.token_ids)
    assert {t: extended.token_ids[t] for t in new} == {t: VOCAB_SIZE + k for k, t in enumerate(new)}
    assert extended.size == VOCAB_SIZE + len(new) + 1
    probes = build_probe_set(base, n=200)
    assert map_probes(probes, extended).ids == map_probes(probes, base).ids


# ---------------------------------------------------------------------------------------------------------
# probe sets


def test_probe_set_id_known_answer() -> None:
    probes = ProbeSpec("golden", 1, "words-hash-v1", ("▁the", "ing"))
    expected = (
        b"\x84"
        b"\xa4name\xa6golden"
        b"\xa4rule\xadwords-hash-v1"
        b"\xa6tokens\x92\xa6\xe2\x96\x81the\xa3ing"
        b"\xa7version\x01"
    )
    assert encode(probes.to_map()) == expected
    assert probes.id == hashlib.sha256(expected).hexdigest()


def test_probe_set_id_changes_with_every_field(vocabs: dict[TokenizerStyle, Vocabulary]) -> None:
    p = build_probe_set(vocabs["bytelevel"], n=32)
    assert p.id == build_probe_set(vocabs["bytelevel"], n=32).id
    assert (p.name, p.version, p.rule, len(p)) == (f"{DEFAULT_RULE}-n32", 1, DEFAULT_RULE, 32)
    variants = [
        ProbeSpec(p.name, p.version, p.rule, (*p.tokens[:-1], "▁zzzz")),
        ProbeSpec(p.name, p.version, p.rule, (p.tokens[1], p.tokens[0], *p.tokens[2:])),
        ProbeSpec(p.name, p.version, p.rule, p.tokens[:-1]),
        ProbeSpec("other", p.version, p.rule, p.tokens),
        ProbeSpec(p.name, p.version + 1, p.rule, p.tokens),
        ProbeSpec(p.name, p.version, "all-hash-v1", p.tokens),
    ]
    ids = {v.id for v in variants} | {p.id}
    assert len(ids) == len(variants) + 1


@pytest.mark.parametrize("tokens", [("▁a", "▁a"), ("▁a", ""), ("▁a b",), ("▁e\u0301",)])
def test_probe_set_rejects_non_canonical_tokens(tokens: tuple[str, ...]) -> None:
    with pytest.raises(MessageError):
        ProbeSpec("x", 1, "words-hash-v1", tokens)


def test_probe_set_save_load_and_tamper(vocabs: dict[TokenizerStyle, Vocabulary], tmp_path: Path) -> None:
    p = build_probe_set(vocabs["metaspace"], n=50, rule="all-hash-v1")
    f = tmp_path / "probes.json"
    save_probe_set(p, f)
    doc = json.loads(f.read_text(encoding="utf-8"))
    assert doc["format"] == PROBE_SET_FORMAT and doc["id"] == p.id
    q = load_probe_set(f)
    assert q == p and q.id == p.id

    def rewrite(change: dict[str, Any]) -> None:
        f.write_text(json.dumps({**doc, **change}, ensure_ascii=False), encoding="utf-8")

    for change in ({"tokens": [*doc["tokens"][:-1], "▁zzzz"]}, {"name": "renamed"}, {"version": 2},
                   {"id": "0" * 64}):
        rewrite(change)
        with pytest.raises(TokenizerError, match=rf"{f}.*altered"):
            load_probe_set(f)
    for change in ({"format": "other/1"}, {"version": "1"}, {"tokens": "▁the"}, {"tokens": ["▁a", "▁a"]}):
        rewrite(change)
        with pytest.raises(TokenizerError, match=str(f)):
            load_probe_set(f)
    for text in ("{", '{"format": "x", "format": "y"}', "[]"):
        f.write_text(text, encoding="utf-8")
        with pytest.raises(TokenizerError, match=str(f)):
            load_probe_set(f)
    with pytest.raises(TokenizerError, match="absent"):
        load_probe_set(tmp_path / "absent.json")


def test_rules(vocabs: dict[TokenizerStyle, Vocabulary]) -> None:
    vocab = vocabs["bytelevel"]
    assert set(PROBE_RULES) >= {"words-hash-v1", "all-hash-v1", "rare-ids-v1"}
    words = [t for t in vocab.token_ids if t.startswith("▁") and len(t) >= 4 and t[1:].isalpha()]
    by_hash = sorted(words, key=lambda t: hashlib.sha256(t.encode()).digest())

    p = build_probe_set(vocab, n=40, rule="words-hash-v1")
    assert list(p.tokens) == by_hash[:40]
    everything = build_probe_set(vocab, rule="words-hash-v1")  # fewer than 4096 qualify: all of them, no error
    assert list(everything.tokens) == by_hash and len(everything) < 4096

    rare = build_probe_set(vocab, n=20, rule="rare-ids-v1")
    rare_ids = [vocab.token_ids[t] for t in rare.tokens]
    assert rare_ids == sorted(rare_ids, reverse=True)
    assert rare_ids[0] == max(vocab.token_ids[t] for t in words)
    assert set(rare.tokens) <= set(words)

    all_tokens = build_probe_set(vocab, n=10_000, rule="all-hash-v1")
    assert set(all_tokens.tokens) == set(vocab.token_ids)
    assert any(not t.startswith("▁") for t in all_tokens.tokens)

    with pytest.raises(ValueError, match="unknown probe rule"):
        build_probe_set(vocab, rule="words-hash-v9")
    with pytest.raises(ValueError, match="positive"):
        build_probe_set(vocab, n=0)


def test_hash_rule_picks_overlapping_sets_across_tokenizers(vocabs: dict[TokenizerStyle, Vocabulary]) -> None:
    a = build_probe_set(vocabs["bytelevel"], n=60, rule="words-hash-v1")
    b = build_probe_set(vocabs["metaspace"], n=60, rule="words-hash-v1")
    common_a = [t for t in a.tokens if t in set(b.tokens)]
    common_b = [t for t in b.tokens if t in set(a.tokens)]
    assert len(common_a) >= 20
    assert common_a == common_b  # same hash order in both


# ---------------------------------------------------------------------------------------------------------
# mapping


def test_cross_style_coverage(
    tokenizers: dict[TokenizerStyle, Tokenizer], vocabs: dict[TokenizerStyle, Vocabulary]
) -> None:
    probes = build_probe_set(vocabs["bytelevel"], n=200)
    wp = vocabs["wordpiece"]
    m = map_probes(probes, wp)
    expected_present = [tokenizers["wordpiece"].token_to_id(t[1:]) is not None for t in probes.tokens]
    assert list(m.present) == expected_present
    assert m.coverage == pytest.approx(sum(expected_present) / len(probes))
    assert 0 < m.coverage < 1
    assert m.missing == tuple(t for t, ok in zip(probes.tokens, expected_present, strict=True) if not ok)
    # WordPiece here is lowercased: a capitalised probe word is never present
    assert all(t in m.missing for t in probes.tokens if t[1].isupper())
    assert m.present_ids() == tuple(tokenizers["wordpiece"].token_to_id(t[1:]) for t in m.present_tokens())
    assert len(m.present_ids()) + len(m.missing) == len(probes)
    assert m.source == wp.source


def test_map_probes_needs_enough_tokens(vocabs: dict[TokenizerStyle, Vocabulary]) -> None:
    vocab = vocabs["metaspace"]
    absent = ProbeSpec("absent", 1, "manual", ("▁zyzzyva", "▁quokka"))
    with pytest.raises(TokenizerError, match=rf"{vocab.source}.*none of the tokens"):
        map_probes(absent, vocab, min_tokens=0)
    few = ProbeSpec("few", 1, "manual", ("▁the", "▁function", "▁quokka"))
    with pytest.raises(TokenizerError, match=rf"{vocab.source}.*only 2 .*at least 16"):
        map_probes(few, vocab)
    m = map_probes(few, vocab, min_tokens=2)
    assert m.present == (True, True, False)
    assert m.missing == ("▁quokka",)
    assert m.present_tokens() == ("▁the", "▁function")
    assert m.coverage == pytest.approx(2 / 3)
