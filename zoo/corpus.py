"""Built-in text corpora, available offline on every machine that has Python.

The zoo trains its tokenizers (and, in later issues, its models) on text that ships with the Python
standard library: module and function docstrings. The corpus is deterministic for a given Python
minor version: modules are visited in a fixed order and every docstring is normalised.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator

# Modules whose docstrings make up the default English-like corpus, in a fixed order.
DOC_MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs",
    "collections", "colorsys", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "email", "enum", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "imaplib", "inspect",
    "io", "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "mimetypes", "numbers",
    "operator", "optparse", "os", "pathlib", "pickle", "platform", "poplib", "pprint", "queue",
    "random", "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socket",
    "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "trace", "traceback", "turtle", "typing", "unittest",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "zipfile", "zoneinfo",
)


def _docstrings(module_name: str) -> Iterator[str]:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a module missing on a trimmed Python build just contributes nothing
        return
    seen: set[int] = set()

    def visit(obj: object, depth: int) -> Iterator[str]:
        if id(obj) in seen or depth > 2:
            return
        seen.add(id(obj))
        doc = inspect.getdoc(obj)
        if doc:
            yield doc
        if inspect.ismodule(obj) or inspect.isclass(obj):
            for name in sorted(vars(obj)):
                if name.startswith("_"):
                    continue
                member = vars(obj)[name]
                owner = getattr(member, "__module__", None) or ""
                if (inspect.isclass(member) or inspect.isfunction(member)) and owner.startswith(module_name):
                    yield from visit(member, depth + 1)

    yield from visit(module, 0)


def docstring_corpus(modules: tuple[str, ...] = DOC_MODULES) -> list[str]:
    """Paragraphs of English-like text from standard-library docstrings, in a fixed order."""
    out: list[str] = []
    for name in modules:
        for doc in _docstrings(name):
            for para in doc.split("\n\n"):
                text = " ".join(para.split())
                if len(text) >= 40:
                    out.append(text)
    return out
