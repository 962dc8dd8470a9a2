"""Regenerate the gRPC stubs in ``protocol/_pb/`` from ``proto/*.proto`` with ``grpc_tools.protoc``.

    python scripts/gen_proto.py            # rewrite protocol/_pb/
    python scripts/gen_proto.py --out DIR  # write elsewhere (the staleness test compares the two)

protoc writes ``import pawprint_pb2`` in the gRPC module, which only works with the output directory on
``sys.path``; the script rewrites it to an import from ``protocol._pb``. The generated files are never edited
by hand and never imported outside the gRPC adapters (``protocol/wire.py``, ``verifier/_server.py``,
``owner/_client.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "proto"
PACKAGE = "protocol._pb"
DEFAULT_OUT = REPO / "protocol" / "_pb"

_INIT = '"""Generated gRPC stubs (scripts/gen_proto.py). Do not edit; never import outside the gRPC adapters."""\n'
# mypy checks imported modules even when their files are excluded; the generated code is not annotated.
_MYPY_HEADER = "# mypy: ignore-errors\n"


class GenerationError(Exception):
    """protoc failed or produced nothing."""


def generate(out: Path) -> list[Path]:
    """Generate the stubs of every ``proto/*.proto`` into ``out`` (created if missing); returns the files."""
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise GenerationError(f"no .proto files in {PROTO_DIR}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        argv = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(p.name for p in protos),
        ]
        code = protoc.main(argv)
        if code != 0:
            raise GenerationError(f"protoc exited with status {code}")
        written = []
        for src in sorted(Path(tmp).iterdir()):
            text = _fix_imports(src.read_text(encoding="utf-8"), [p.stem for p in protos])
            if src.suffix == ".py":
                text = _MYPY_HEADER + text
            target = out / src.name
            target.write_text(text, encoding="utf-8")
            written.append(target)
    init = out / "__init__.py"
    init.write_text(_INIT, encoding="utf-8")
    return [init, *written]


def _fix_imports(text: str, stems: list[str]) -> str:
    for stem in stems:
        text = re.sub(rf"^import {stem}_pb2 as ", f"from {PACKAGE} import {stem}_pb2 as ", text, flags=re.MULTILINE)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        files = generate(args.out)
    except GenerationError as e:
        print(f"gen_proto: error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
