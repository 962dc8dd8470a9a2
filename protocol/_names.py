"""Names as readers see them: one normal form for every spelling a person would take for the same name.

A registry name is ASCII only (``protocol._log.check_base_name`` refuses every other character, so full-width
letters, zero-width joiners and Cyrillic look-alikes never reach the log). What remains confusable is what a
reader cannot tell apart: case, ``0``/``o``, ``1``/``l``/``I``, ``rn``/``m``, ``vv``/``w``, ``cl``/``d``, the
separators ``. _ + -`` and punctuation at either end (``acme/tiny-llama-base.``). ``normalise_name`` maps a
whole name (organisation and model) to one skeleton; the registry refuses a new name whose skeleton is
another name's, and a namespace claim whose skeleton is another claim's.

``normalise_name`` also accepts any Unicode text (so it can be applied to input before it is refused, and so
that the rule does not depend on the ASCII rule alone): NFKC (full-width and compatibility forms become their
plain letters), case folding, decomposition with every combining mark, format character (zero-width space,
joiners, bidi controls) and control character removed, then a small table of Cyrillic and Greek letters that
look like Latin ones. It is not Unicode's UTS #39 ``skeleton``: no well-kept implementation of it is on PyPI
(``confusable-homoglyphs`` finds mixed-script homoglyphs but gives no skeleton), and with ASCII-only names the
table above covers what can occur. The mapping is deliberately coarse: a false collision costs a vendor a
different name; a missed one lets a squatter borrow a reputation.

Pure: text in, text out; the same input always gives the same skeleton (the audit replays it).
"""

from __future__ import annotations

import re
import unicodedata

# Lowercase non-Latin letters that read as Latin ones (after NFKC and case folding).
_SCRIPT_LOOKALIKES = str.maketrans({
    "\u0430": "a", "\u0432": "b", "\u0435": "e", "\u043a": "k", "\u043c": "m", "\u043d": "h", "\u043e": "o",
    "\u0440": "p", "\u0441": "c", "\u0442": "t", "\u0443": "y", "\u0445": "x", "\u0455": "s", "\u0456": "i",
    "\u0458": "j", "\u04bb": "h", "\u0501": "d",
    "\u03b1": "a", "\u03b2": "b", "\u03b5": "e", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03bf": "o",
    "\u03c1": "p", "\u03c4": "t", "\u03c5": "u", "\u03c7": "x",
})
# Digits and symbols that read as letters; every separator reads as one.
_GLYPHS = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "!": "l", "_": "-", ".": "-", "+": "-",
                         " ": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-"})
# Letter pairs that read as one letter (applied after the table above, so "rn" and "m" meet).
_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_DASHES = re.compile(r"-+")
_DROPPED = frozenset({"Mn", "Me", "Cf", "Cc", "Co", "Cn"})  # marks, format/control/private/unassigned


def _visible(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) not in _DROPPED)


def _is_edge(c: str) -> bool:
    """Punctuation, symbols and spaces, which a reader does not see as part of a name at its ends."""
    return unicodedata.category(c)[0] in "PSZ"


def _segment(part: str) -> str:
    start, end = 0, len(part)
    while start < end and _is_edge(part[start]):
        start += 1
    while end > start and _is_edge(part[end - 1]):
        end -= 1
    text = part[start:end].translate(_SCRIPT_LOOKALIKES).translate(_GLYPHS)
    for pair, letter in _PAIRS:
        text = text.replace(pair, letter)
    return _DASHES.sub("-", text).strip("-")


def normalise_name(name: str) -> str:
    """The skeleton of ``name``: two names with one skeleton are confusable (see the module docstring).

    ``acme/Tiny-Llama-Base``, ``acme/tiny_llama_base.``, ``ACME/tiny-IIama-base`` and ``acme/tiny-llama-base``
    (with a zero-width space or in full-width letters) all give ``acme/tlny-llama-base``.
    """
    text = unicodedata.normalize("NFKC", name).casefold()
    text = unicodedata.normalize("NFKC", _visible(text)).casefold()
    return "/".join(_segment(p) for p in text.split("/"))


def namespace_of(name: str) -> str | None:
    """The organisation part of ``org/model`` (``None`` for a name without one)."""
    head, sep, _ = name.partition("/")
    return head if sep else None
