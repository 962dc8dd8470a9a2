"""The zoo's second-stage corpora: text unlike the pretraining docstrings, all from the Python standard library.

The bases are pretrained on ``zoo.corpus.docstring_corpus``. Derivatives are trained on something else, as a
real fine-tune or continued pretraining would be:

- ``stdlib-qa``: supervised question/answer pairs built from function signatures and the first docstring line
  (a chat-like format the bases never saw);
- ``python-reference``: the language reference shipped as ``pydoc_data.topics`` (long technical prose);
- ``stdlib-source-a`` / ``stdlib-source-b``: Python source code of two disjoint sets of modules.

Every corpus is deterministic for a given Python minor version (fixed module order, normalised whitespace),
and ``split`` holds out a fixed share of every corpus for evaluation. Nothing here touches the network.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from zoo.corpus import DOC_MODULES, docstring_corpus

# Disjoint module sets for the two source-code corpora; pure-Python modules, so ``getsource`` works.
SOURCE_MODULES_A: tuple[str, ...] = (
    "base64", "bisect", "calendar", "colorsys", "copy", "csv", "difflib", "fnmatch", "fractions", "glob",
    "heapq", "json.decoder", "json.encoder", "pprint", "shlex", "statistics", "string", "textwrap",
)
SOURCE_MODULES_B: tuple[str, ...] = (
    "abc", "argparse", "configparser", "contextlib", "dataclasses", "functools", "gettext", "ipaddress",
    "numbers", "operator", "optparse", "pathlib", "queue", "sched", "shutil", "tempfile", "tokenize",
    "traceback", "weakref",
)

T = TypeVar("T")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _interpreter_paths() -> tuple[str, ...]:
    """The running interpreter's paths, as a default value would print them (``platform.architecture``'s
    ``executable=sys.executable``): the corpus must not depend on where the virtual environment lives."""
    paths = {sys.executable, getattr(sys, "_base_executable", sys.executable)}
    return tuple(sorted((repr(p) for p in paths if p), key=len, reverse=True))

CORPORA: tuple[str, ...] = (
    "stdlib-docstrings", "stdlib-qa", "python-reference", "stdlib-source-a", "stdlib-source-b",
)


@dataclass(frozen=True)
class QAPair:
    """One supervised example: the loss is taken on ``answer`` only."""

    prompt: str
    answer: str


def _squash(text: str) -> str:
    return " ".join(text.split())


def _public_callables(module_name: str) -> Iterator[tuple[str, object]]:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a module missing on a trimmed Python build contributes nothing
        return
    for name in sorted(vars(module)):
        if name.startswith("_"):
            continue
        obj = vars(module)[name]
        owner = getattr(obj, "__module__", None) or ""
        if not owner.startswith(module_name):
            continue
        if inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj
        elif inspect.isclass(obj):
            for meth_name in sorted(vars(obj)):
                meth = vars(obj)[meth_name]
                if not meth_name.startswith("_") and inspect.isfunction(meth):
                    yield f"{module_name}.{name}.{meth_name}", meth


def qa_corpus(modules: Sequence[str] = DOC_MODULES) -> list[QAPair]:
    """Question/answer pairs about standard-library functions, in two templates, in a fixed order."""
    out: list[QAPair] = []
    for module_name in modules:
        for qualname, obj in _public_callables(module_name):
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            first = _squash(doc.split("\n\n")[0])
            if len(first) < 20:
                continue
            try:
                # default values print with their address ("<object object at 0x7f...>"): drop it
                sig = _ADDRESS.sub("", _squash(str(inspect.signature(obj))))  # type: ignore[arg-type]
                for path in _interpreter_paths():  # a default bound to this machine's interpreter path
                    sig = sig.replace(path, "sys.executable")
            except (TypeError, ValueError):
                continue
            sig = sig if len(sig) <= 120 else sig[:117] + "..."
            out.append(QAPair(f"### Question: What does {qualname}{sig} do? ### Answer:", " " + first))
            out.append(QAPair(f"### Question: How is {qualname} called? ### Answer:",
                              f" Call it as {qualname.rsplit('.', 1)[-1]}{sig}."))
    return out


def reference_corpus() -> list[str]:
    """Paragraphs of the Python language reference (``pydoc_data.topics``), in a fixed order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # trimmed Python builds drop pydoc_data; fall back to docstrings of other modules
        return docstring_corpus(("builtins", "sys", "math", "cmath", "time", "zlib"))
    out: list[str] = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            text = _squash(para)
            if len(text) >= 40:
                out.append(text)
    return out


def source_corpus(modules: Sequence[str]) -> list[str]:
    """Blocks of Python source code (split at blank lines, whitespace squashed like the other corpora)."""
    out: list[str] = []
    for module_name in modules:
        try:
            source = inspect.getsource(importlib.import_module(module_name))
        except (ImportError, OSError, TypeError):
            continue
        for block in source.split("\n\n"):
            text = _squash(block)
            if len(text) >= 40:
                out.append(text)
    return out


def text_corpus(name: str) -> list[str]:
    """A plain-text corpus by name (every entry of ``CORPORA`` except the supervised ``stdlib-qa``)."""
    if name == "stdlib-docstrings":
        return docstring_corpus()
    if name == "python-reference":
        return reference_corpus()
    if name == "stdlib-source-a":
        return source_corpus(SOURCE_MODULES_A)
    if name == "stdlib-source-b":
        return source_corpus(SOURCE_MODULES_B)
    raise ValueError(f"unknown text corpus {name!r}; expected one of {', '.join(CORPORA)}")


def split(items: Sequence[T], every: int = 20) -> tuple[list[T], list[T]]:
    """``(train, heldout)``: every ``every``-th item (from the first) is held out."""
    heldout = [x for i, x in enumerate(items) if i % every == 0]
    train = [x for i, x in enumerate(items) if i % every != 0]
    return train, heldout
