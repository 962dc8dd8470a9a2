"""The one strict JSON loader of the project: every JSON document a party reads (trust stores, probe sets,
client roles, nulls, safetensors headers, invariants metadata) goes through ``loads_strict``.

Stricter than ``json.loads`` where leniency would let two readers see different documents: a repeated key is
refused (``json`` keeps the last), ``NaN``/``Infinity`` are refused (not JSON), and input nested too deeply is a
clean error rather than a ``RecursionError``. Every failure is one ``JsonError`` whose message says what was
wrong; callers prefix it with what the document is.
"""

from __future__ import annotations

import json
from typing import Any

from protocol._errors import FormatError


class JsonError(FormatError):
    """Bytes or text that are not one strict JSON document."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonError(f"duplicate field {key!r:.80}")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise JsonError(f"{name} is not allowed")


def loads_strict(data: bytes | bytearray | str) -> Any:
    """Parse one JSON document (UTF-8 bytes or text); ``JsonError`` on anything else.

    Returns ``Any``: the shape of a document is checked by its own parser, not here.
    """
    try:
        return json.loads(data, object_pairs_hook=_unique, parse_constant=_no_constant)
    except JsonError:
        raise
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise JsonError(str(e)) from e
    except RecursionError:
        raise JsonError("nested too deeply") from None
