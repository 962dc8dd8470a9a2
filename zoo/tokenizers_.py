"""Small tokenizers trained offline, in the three spelling conventions pawprint must reconcile.

- ``bytelevel``: GPT-2 style byte-level BPE (word-initial marker ``Ġ``)
- ``metaspace``: SentencePiece style BPE (word-initial marker ``▁``)
- ``wordpiece``: BERT style WordPiece (continuation marker ``##``)
Training is deterministic for a given corpus and vocabulary size.
"""

from __future__ import annotations

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
