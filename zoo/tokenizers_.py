"""Small tokenizers trained offline, in the three spelling conventions pawprint must reconcile.

- ``bytelevel``: GPT-2 style byte-level BPE (word-initial marker ``Ġ``)
- ``metaspace``: SentencePiece style BPE (word-initial marker ``▁``)
- ``wordpiece``: BERT style WordPiece (continuation marker ``##``)
Training is deterministic for a given corpus and vocabulary size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TokenizerStyle = Literal["bytelevel", "metaspace", "wordpiece"]
TOKENIZER_STYLES: tuple[TokenizerStyle, ...] = ("bytelevel", "metaspace", "wordpiece")

SPECIAL_TOKENS: dict[TokenizerStyle, list[str]] = {
    "bytelevel": ["<|endoftext|>", "<|pad|>"],
    "metaspace": ["<unk>", "<s>", "</s>"],
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
}


def train_tokenizer(texts: Sequence[str], style: TokenizerStyle, vocab_size: int) -> Tokenizer:
    """Train a tokenizer of the given style on ``texts``."""
    specials = SPECIAL_TOKENS[style]
    trainer: trainers.Trainer
    if style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif style == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    elif style == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer style {style!r}; expected one of {TOKENIZER_STYLES}")
    tok.train_from_iterator(list(texts), trainer=trainer)
    if style == "wordpiece":
        sep, cls = tok.token_to_id("[SEP]"), tok.token_to_id("[CLS]")
        if sep is None or cls is None:
            raise ValueError("WordPiece training lost the [SEP]/[CLS] special tokens")
        tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    return tok


_CONTINUATION_PLANE = 0xF0000


def train_style_tokenizer(texts: Sequence[str], style: TokenizerStyle, vocab_size: int) -> str:
    """``zoo.tokenizers_.train_tokenizer`` as JSON, made deterministic for WordPiece.

    The ``tokenizers`` WordPiece trainer numbers its ``##`` symbols in hash-map order, which is seeded per
    process, so merges with equal counts are ordered differently from run to run and the vocabulary (ids, and
    at the size boundary even tokens) changes. The BPE trainer is deterministic; so for WordPiece the same
    vocabulary is learned by BPE on words whose non-initial characters are moved to a private-use plane (so a
    continuation symbol is an ordinary, sorted alphabet symbol), then mapped back to ``##`` spelling and put
    into the tokenizer that ``train_tokenizer`` configures (normaliser, pre-tokenizer, post-processor).
    """
    if style != "wordpiece":
        return train_tokenizer(texts, style, vocab_size).to_str()
    skeleton = train_tokenizer(texts[:50], style, 100)
    if skeleton.normalizer is None or skeleton.pre_tokenizer is None:
        raise ValueError("the WordPiece tokenizer has no normaliser or pre-tokenizer")
    lines = []
    for text in texts:
        words = skeleton.pre_tokenizer.pre_tokenize_str(skeleton.normalizer.normalize_str(text))
        lines.append(" ".join(w[0] + "".join(chr(_CONTINUATION_PLANE + ord(c)) for c in w[1:])
                              for w, _ in words if all(ord(c) < 0x10000 for c in w)))
    specials = SPECIAL_TOKENS["wordpiece"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       show_progress=False))

    def unmap(token: str) -> str:
        if token in specials:
            return token
        plain = "".join(chr(ord(c) - _CONTINUATION_PLANE) if ord(c) >= _CONTINUATION_PLANE else c for c in token)
        return "##" + plain if ord(token[0]) >= _CONTINUATION_PLANE else plain

    learned: dict[str, int] = json.loads(bpe.to_str())["model"]["vocab"]
    data = json.loads(skeleton.to_str())
    data["model"]["vocab"] = {unmap(t): i for t, i in sorted(learned.items(), key=lambda kv: kv[1])}
    if len(data["model"]["vocab"]) != len(learned) or any(
            data["model"]["vocab"].get(t) != skeleton.token_to_id(t) for t in specials):
        raise ValueError("the WordPiece vocabulary did not map back one to one")
    return json.dumps(data, ensure_ascii=False)
