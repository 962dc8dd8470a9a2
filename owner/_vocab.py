"""Tokenizer vocabularies in one canonical spelling, read from a model's own tokenizer files.

Probe tokens are chosen by string, never by id (SCIENCE.md, "Probe tokens"), so every vocabulary is first
respelled in one convention: a word-initial piece starts with ``▁`` (U+2581), a continuation piece has no
marker, a space anywhere is ``▁``, and the text is in Unicode NFC. From each tokenizer convention:

- byte-level BPE (GPT-2, ``Ġ`` = space): characters are mapped back to bytes through GPT-2's
  ``bytes_to_unicode`` table and decoded as UTF-8; a piece that is not valid UTF-8 on its own (part of a
  multi-byte character) has no canonical spelling and is left out;
- SentencePiece / Metaspace (``▁``): kept as is; byte-fallback pieces (``<0x41>``) are left out;
- WordPiece (``##`` continuation): ``##ing`` -> ``ing``, ``the`` -> ``▁the``;
- tiktoken rank files (the first Qwen's ``qwen.tiktoken``: base64 token bytes and rank per line): the bytes are
  byte-level tokens and are read as byte-level BPE is.

Special and control tokens (``added_tokens`` marked special, SentencePiece CONTROL/UNKNOWN/UNUSED pieces,
and anything spelled like ``<s>``, ``<|endoftext|>`` or ``[CLS]``) never enter a vocabulary: they say
nothing about the text a model learned. This module only reads local files: it never runs a tokenizer,
never imports ``transformers``, and never sends anything anywhere.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from owner.errors import TokenizerError

VocabStyle = Literal["bytelevel", "metaspace", "wordpiece", "unigram"]
VOCAB_STYLES: tuple[VocabStyle, ...] = ("bytelevel", "metaspace", "wordpiece", "unigram")
WORD_START = "▁"

# Tokenizer files in order of preference: tokenizer.json describes the whole pipeline, so it decides
# the spelling convention from the tokenizer itself rather than from file names.
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "qwen.tiktoken")

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
# Spellings of control tokens across families (<s>, </s>, <unk>, <|endoftext|>, <|im_start|>,
# <extra_id_0>, [CLS], [unused0]). Applied to every format, so that a vocab.json without its config
# and the same tokenizer's tokenizer.json give the same vocabulary.
_CONTROL_LIKE = re.compile(r"<\|[^<>|]*\|>|</?[A-Za-z][A-Za-z0-9_.:-]*>|\[[A-Za-z][A-Za-z0-9_]*\]")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (``Ġ`` is the space byte)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER: dict[str, int] = {c: b for b, c in _bytes_to_unicode().items()}


def canonical_token(token: str, style: VocabStyle, *, continuing_prefix: str = "##") -> str | None:
    """The canonical spelling of one vocabulary entry written in ``style``, or None if it has none.

    ``continuing_prefix`` is the WordPiece continuation marker (``##`` unless the tokenizer says otherwise).
    Control-token spellings are not filtered here; :class:`Vocabulary` does that.
    """
    if not token:
        return None
    if style == "bytelevel":
        try:
            raw = bytes(_BYTE_DECODER[c] for c in token)
            text = raw.decode("utf-8")
        except (KeyError, UnicodeDecodeError):  # a raw added token, or part of a multi-byte character
            return None
    elif style in ("metaspace", "unigram"):
        if _BYTE_PIECE.fullmatch(token):
            return None
        text = token
    elif style == "wordpiece":
        if continuing_prefix and token.startswith(continuing_prefix) and len(token) > len(continuing_prefix):
            text = token[len(continuing_prefix):]
        else:
            text = WORD_START + token
    else:
        raise ValueError(f"unknown vocabulary style {style!r}; expected one of {VOCAB_STYLES}")
    if not text:
        return None
    return unicodedata.normalize("NFC", text).replace(" ", WORD_START)


@dataclass(frozen=True)
class Vocabulary:
    """A model's ordinary tokens in canonical spelling, mapped to the model's own ids.

    ``size`` counts the distinct ids of the raw tokenizer, specials included; ``collisions`` counts ids
    dropped because a lower id already had the same canonical spelling; ``excluded`` counts specials and
    pieces without a canonical spelling.
    """

    source: Path
    style: VocabStyle
    size: int
    token_ids: Mapping[str, int] = field(repr=False, hash=False)
    collisions: int = 0
    excluded: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_ids", MappingProxyType(dict(self.token_ids)))

    @classmethod
    def from_pieces(
        cls,
        pieces: Iterable[tuple[str, int]],
        style: VocabStyle,
        *,
        source: Path,
        size: int | None = None,
        special_ids: Collection[int] = (),
        special_tokens: Collection[str] = (),
        continuing_prefix: str = "##",
    ) -> Vocabulary:
        """Canonicalise raw ``(token, id)`` pairs; on a canonical collision the lowest id wins."""
        entries = sorted(pieces, key=lambda p: (p[1], p[0]))
        out: dict[str, int] = {}
        seen_ids: set[int] = set()
        collisions = excluded = 0
        for tok, i in entries:
            seen_ids.add(i)
            if i in special_ids or tok in special_tokens or _CONTROL_LIKE.fullmatch(tok):
                excluded += 1
                continue
            c = canonical_token(tok, style, continuing_prefix=continuing_prefix)
            if c is None:
                excluded += 1
            elif c in out:
                collisions += 1
            else:
                out[c] = i
        return cls(Path(source), style, len(seen_ids) if size is None else size, out, collisions, excluded)

    def __len__(self) -> int:
        return len(self.token_ids)

    def __contains__(self, token: object) -> bool:
        return token in self.token_ids

    def get(self, token: str) -> int | None:
        """The id of canonical ``token``, or None if this vocabulary lacks it."""
        return self.token_ids.get(token)


# ---------------------------------------------------------------------------------------------------------
# Locating and reading tokenizer files


def load_vocabulary(model_dir: Path) -> Vocabulary:
    """Read the tokenizer files of the model in ``model_dir`` (see ``TOKENIZER_FILES`` for the order).

    ``model_dir`` may also be a file of the model (``model.onnx``), meaning its directory; a directory that
    holds only ``.onnx`` files (the ``onnx/`` folder of an exported repository) falls back to its parent.
    """
    if Path(model_dir).suffix.lower() == ".gguf" and Path(model_dir).is_file():  # the tokenizer is in the file
        return read_gguf_vocabulary(Path(model_dir))
    found = _find_tokenizer_file(Path(model_dir))
    reader = {
        "tokenizer.json": _read_tokenizer_json,
        "vocab.json": _read_vocab_json,
        "vocab.txt": _read_vocab_txt,
        "tokenizer.model": _read_sentencepiece,
        "qwen.tiktoken": _read_tiktoken,
    }[found.name]
    return reader(found)


def _find_tokenizer_file(path: Path) -> Path:
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise TokenizerError(f"{path}: not a directory; expected a model directory with tokenizer files")
    candidates = [path]
    if any(path.glob("*.onnx")):
        candidates.append(path.parent)
    for d in candidates:
        for name in TOKENIZER_FILES:
            if (d / name).is_file():
                return d / name
    raise TokenizerError(f"{path}: no tokenizer files found; expected one of {', '.join(TOKENIZER_FILES)}")


def _read_json(f: Path) -> Any:
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise TokenizerError(f"{f}: not a readable JSON file ({e})") from e


def _is_id(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _token_id_map(obj: object, f: Path, what: str) -> dict[str, int]:
    if not isinstance(obj, dict) or not all(isinstance(k, str) and _is_id(v) for k, v in obj.items()):
        raise TokenizerError(f"{f}: {what} must map token strings to non-negative integer ids")
    if not obj:
        raise TokenizerError(f"{f}: {what} is empty")
    return obj


def _walk(node: object) -> Iterator[object]:
    """Every value inside a JSON tree (to find a ByteLevel step nested in a Sequence, at any depth)."""
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _has_type(node: object, type_name: str) -> bool:
    return any(isinstance(n, dict) and n.get("type") == type_name for n in _walk(node))


def _mentions_word_start(node: object) -> bool:
    return any(isinstance(n, str) and WORD_START in n for n in _walk(node))


def _marker_counts(tokens: Iterable[str]) -> tuple[int, int]:
    ws = bl = 0
    for t in tokens:
        ws += t.startswith(WORD_START)
        bl += t.startswith("Ġ")
    return ws, bl


def _read_tokenizer_json(f: Path) -> Vocabulary:
    data = _read_json(f)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise TokenizerError(f"{f}: expected a Hugging Face tokenizer.json with a 'model' object")
    added = data.get("added_tokens") or []
    if not isinstance(added, list) or not all(
        isinstance(a, dict) and _is_id(a.get("id")) and isinstance(a.get("content"), str) for a in added
    ):
        raise TokenizerError(f"{f}: 'added_tokens' must be a list of objects with an integer id and content")
    special_ids = {a["id"] for a in added if a.get("special")}
    special_tokens = {a["content"] for a in added if a.get("special")}
    pipeline = [data.get("normalizer"), data.get("pre_tokenizer"), data.get("decoder")]
    byte_level = _has_type(pipeline[1:], "ByteLevel")
    mtype = model.get("type")
    prefix = "##"
    pieces: list[tuple[str, int]]
    style: VocabStyle
    if mtype == "BPE":
        vocab = _token_id_map(model.get("vocab"), f, "model.vocab")
        pieces = list(vocab.items())
        if model.get("end_of_word_suffix"):
            raise TokenizerError(
                f"{f}: BPE with end_of_word_suffix {model['end_of_word_suffix']!r} marks word ends, not "
                "word starts; this spelling convention is not supported"
            )
        ws, bl = _marker_counts(vocab)
        if byte_level:
            style = "bytelevel"
        elif _has_type(pipeline, "Metaspace") or _mentions_word_start(pipeline) or (ws and ws >= bl):
            style = "metaspace"
        elif isinstance(model.get("continuing_subword_prefix"), str) and model["continuing_subword_prefix"]:
            style, prefix = "wordpiece", model["continuing_subword_prefix"]
        else:
            raise TokenizerError(
                f"{f}: BPE tokenizer with neither a ByteLevel nor a Metaspace step nor a continuation "
                "prefix; cannot tell word-initial pieces from continuations"
            )
    elif mtype == "WordPiece":
        vocab = _token_id_map(model.get("vocab"), f, "model.vocab")
        pieces = list(vocab.items())
        style = "wordpiece"
        p = model.get("continuing_subword_prefix", "##")
        if not isinstance(p, str):
            raise TokenizerError(f"{f}: model.continuing_subword_prefix must be a string")
        prefix = p
    elif mtype == "Unigram":
        entries = model.get("vocab")
        if not isinstance(entries, list) or not entries or not all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) for e in entries
        ):
            raise TokenizerError(f"{f}: Unigram model.vocab must be a non-empty list of [piece, score]")
        pieces = [(e[0], i) for i, e in enumerate(entries)]
        style = "bytelevel" if byte_level else "unigram"
    else:
        raise TokenizerError(
            f"{f}: model type {mtype!r} is not supported; expected BPE, WordPiece or Unigram"
        )
    size = len({i for _, i in pieces} | {a["id"] for a in added})
    # Non-special added tokens absent from the model vocabulary are stored as raw text, not in the
    # model's spelling, so they are left out rather than guessed at.
    return Vocabulary.from_pieces(
        pieces, style, source=f, size=size, special_ids=special_ids, special_tokens=special_tokens,
        continuing_prefix=prefix,
    )


def _config_specials(d: Path) -> tuple[set[int], set[str]]:
    """Special tokens declared beside a vocab.json / vocab.txt / tokenizer.model (transformers layout)."""
    ids: set[int] = set()
    tokens: set[str] = set()

    def content(v: object) -> str | None:
        if isinstance(v, str):
            return v
        if isinstance(v, dict) and isinstance(v.get("content"), str):
            return str(v["content"])
        return None

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = d / name
        if not f.is_file():
            continue
        cfg = _read_json(f)
        if not isinstance(cfg, dict):
            raise TokenizerError(f"{f}: expected a JSON object")
        for k, v in cfg.items():
            if k.endswith("_token") and (c := content(v)) is not None:
                tokens.add(c)
            elif k == "additional_special_tokens" and isinstance(v, list):
                tokens.update(c for x in v if (c := content(x)) is not None)
        decoder = cfg.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            for i, v in decoder.items():
                if isinstance(v, dict) and v.get("special") and str(i).isdigit():
                    ids.add(int(i))
                    if (c := content(v)) is not None:
                        tokens.add(c)
    return ids, tokens


def _read_vocab_json(f: Path) -> Vocabulary:
    vocab = _token_id_map(_read_json(f), f, "vocab.json")
    special_ids, special_tokens = _config_specials(f.parent)
    # vocab.json is GPT-2's byte-level format; a few SentencePiece-derived exports (Marian) reuse the
    # name with ▁ pieces, and reading those as byte-level would silently drop every word-initial piece.
    ws, bl = _marker_counts(vocab)
    style: VocabStyle = "metaspace" if ws > bl else "bytelevel"
    size = len(set(vocab.values()) | special_ids)
    return Vocabulary.from_pieces(
        vocab.items(), style, source=f, size=size, special_ids=special_ids, special_tokens=special_tokens
    )


def _read_vocab_txt(f: Path) -> Vocabulary:
    try:
        text = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{f}: not a readable WordPiece vocabulary, one token per line ({e})") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise TokenizerError(f"{f}: WordPiece vocabulary is empty")
    special_ids, special_tokens = _config_specials(f.parent)
    pieces = [(line.removesuffix("\r"), i) for i, line in enumerate(lines)]
    size = len(set(range(len(pieces))) | special_ids)
    return Vocabulary.from_pieces(
        pieces, "wordpiece", source=f, size=size, special_ids=special_ids, special_tokens=special_tokens
    )


# ---------------------------------------------------------------------------------------------------------
# SentencePiece ModelProto, parsed from the protobuf wire format (no sentencepiece dependency)

_SP_NORMAL, _SP_UNKNOWN, _SP_CONTROL, _SP_USER_DEFINED, _SP_UNUSED, _SP_BYTE = 1, 2, 3, 4, 5, 6
_SP_UNIGRAM = 1  # TrainerSpec.model_type; BPE = 2, WORD = 3, CHAR = 4


def _varint(buf: bytes, pos: int, f: Path) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TokenizerError(f"{f}: truncated SentencePiece model (varint runs past the end)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise TokenizerError(f"{f}: malformed SentencePiece model (varint longer than 10 bytes)")


def _proto_fields(buf: bytes, f: Path) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for each field of one message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, f)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise TokenizerError(f"{f}: malformed SentencePiece model (field number 0)")
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos, f)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise TokenizerError(f"{f}: truncated SentencePiece model")
            value, pos = buf[pos:pos + width], pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos, f)
            if pos + length > len(buf):
                raise TokenizerError(f"{f}: truncated SentencePiece model (field {number} runs past the end)")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise TokenizerError(f"{f}: malformed SentencePiece model (unsupported wire type {wire})")
        yield number, wire, value


def parse_sentencepiece_model(buf: bytes, f: Path) -> tuple[list[tuple[str, int]], int]:
    """``([(piece, type), ...], model_type)`` from a serialised SentencePiece ``ModelProto``.

    ``f`` only names the file in error messages.
    """
    pieces: list[tuple[str, int]] = []
    model_type = _SP_UNIGRAM
    for number, wire, value in _proto_fields(buf, f):
        if number == 1:
            if not isinstance(value, bytes):
                raise TokenizerError(
                    f"{f}: malformed SentencePiece model (pieces field has wire type {wire})"
                )
            piece: str | None = None
            ptype = _SP_NORMAL
            for n2, _, v2 in _proto_fields(value, f):
                if n2 == 1 and isinstance(v2, bytes):
                    try:
                        piece = v2.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise TokenizerError(f"{f}: piece {len(pieces)} is not valid UTF-8") from e
                elif n2 == 3 and isinstance(v2, int):
                    ptype = v2
            if piece is None:
                raise TokenizerError(f"{f}: piece {len(pieces)} has no text")
            pieces.append((piece, ptype))
        elif number == 2 and isinstance(value, bytes):
            for n2, _, v2 in _proto_fields(value, f):
                if n2 == 3 and isinstance(v2, int):
                    model_type = v2
    if not pieces:
        raise TokenizerError(f"{f}: not a SentencePiece model (no pieces found)")
    return pieces, model_type


def _read_sentencepiece(f: Path) -> Vocabulary:
    try:
        buf = f.read_bytes()
    except OSError as e:
        raise TokenizerError(f"{f}: cannot read SentencePiece model ({e})") from e
    pieces, model_type = parse_sentencepiece_model(buf, f)
    special_ids, special_tokens = _config_specials(f.parent)
    special_ids |= {
        i for i, (_, t) in enumerate(pieces) if t in (_SP_UNKNOWN, _SP_CONTROL, _SP_UNUSED, _SP_BYTE)
    }
    style: VocabStyle = "unigram" if model_type == _SP_UNIGRAM else "metaspace"
    return Vocabulary.from_pieces(
        [(p, i) for i, (p, _) in enumerate(pieces)], style, source=f, size=len(pieces),
        special_ids=special_ids, special_tokens=special_tokens,
    )


# ---------------------------------------------------------------------------------------------------------
# GGUF (llama.cpp): the tokenizer stored in the file's metadata

# tokenizer.ggml.model -> spelling of tokenizer.ggml.tokens. "llama" is SentencePiece (▁ pieces, <0xNN> byte
# pieces); "gpt2" is byte-level BPE (Ġ); llama.cpp's converter respells BERT's WordPiece in "phantom space" form
# (``##ing`` -> ``ing``, ``the`` -> ``▁the``), which is the canonical spelling already; "t5" is Unigram.
_GGUF_STYLES: dict[str, VocabStyle] = {"llama": "metaspace", "gpt2": "bytelevel", "bert": "metaspace",
                                       "t5": "unigram"}
# tokenizer.ggml.token_type values that are not ordinary text: UNKNOWN, CONTROL, USER_DEFINED (added tokens,
# stored as raw text rather than in the model's spelling), UNUSED, BYTE
_GGUF_NOT_TEXT = frozenset({2, 3, 4, 5, 6})


def read_gguf_vocabulary(f: Path) -> Vocabulary:
    """The vocabulary of a ``.gguf`` file, from ``tokenizer.ggml.model``, ``tokenizer.ggml.tokens`` and
    ``tokenizer.ggml.token_type`` (token ids are positions in the token list), read by ``owner._gguf``."""
    from owner._gguf import read_header  # the GGUF reader (needs the gguf package: the owner extra)
    from owner.errors import CheckpointError

    try:
        meta = read_header(f).metadata
    except CheckpointError as e:
        raise TokenizerError(str(e)) from e
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type")
    if not isinstance(model, str):
        raise TokenizerError(f"{f}: GGUF metadata 'tokenizer.ggml.model' is missing (no tokenizer in the file)")
    style = _GGUF_STYLES.get(model)
    if style is None:
        raise TokenizerError(
            f"{f}: GGUF tokenizer model {model!r} is not supported; expected one of {', '.join(_GGUF_STYLES)}"
        )
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise TokenizerError(f"{f}: GGUF metadata 'tokenizer.ggml.tokens' is missing or not a list of strings")
    if types is not None and (not isinstance(types, list) or len(types) != len(tokens)):
        raise TokenizerError(f"{f}: GGUF metadata 'tokenizer.ggml.token_type' does not match the token list")
    special_ids = {i for i, t in enumerate(types or []) if int(t) in _GGUF_NOT_TEXT}
    return Vocabulary.from_pieces(
        [(t, i) for i, t in enumerate(tokens)], style, source=f, size=len(tokens), special_ids=special_ids,
    )


# ---------------------------------------------------------------------------------------------------------
# tiktoken BPE ranks (the first Qwen's qwen.tiktoken)


def _read_tiktoken(f: Path) -> Vocabulary:
    """A tiktoken rank file: one ``<base64 of the token's bytes> <rank>`` per line, the rank being the token id.

    The ranks are byte-level BPE tokens, so each is spelt through GPT-2's byte alphabet and canonicalised as
    any byte-level vocabulary is (a token that is not valid UTF-8 on its own is left out). The family's special
    tokens (``<|endoftext|>``, ``<|im_start|>`` ...) are not in the file: its tokenizer code numbers them after
    the last rank, and they never enter a vocabulary anyway.
    """
    import base64
    import binascii

    try:
        text = f.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{f}: not a readable tiktoken rank file ({e})") from e
    table = _bytes_to_unicode()
    pieces: list[tuple[str, int]] = []
    seen: set[int] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise TokenizerError(f"{f}: line {n}: expected '<base64 token> <rank>'")
        try:
            raw = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError) as e:
            raise TokenizerError(f"{f}: line {n}: the token is not valid base64") from e
        rank = int(parts[1])
        if rank in seen or not raw:
            raise TokenizerError(f"{f}: line {n}: rank {rank} is repeated or its token is empty")
        seen.add(rank)
        pieces.append(("".join(table[b] for b in raw), rank))
    if not pieces:
        raise TokenizerError(f"{f}: tiktoken rank file is empty")
    special_ids, special_tokens = _config_specials(f.parent)
    return Vocabulary.from_pieces(
        pieces, "bytelevel", source=f, size=len(seen | special_ids), special_ids=special_ids,
        special_tokens=special_tokens,
    )
