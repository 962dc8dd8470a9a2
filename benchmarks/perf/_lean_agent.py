"""The owner agent with the proposed changes applied, end to end, as a prototype to measure (LLaMA family,
default layers and probe set): ``python -m benchmarks.perf._lean_agent MODEL -o FILE``.

Same steps as ``pawprint owner invariants`` (open the model, map the probe tokens, read the probe rows, whiten
them once, each layer's terms, the invariants file), with two changes outside the files this benchmark owns:

- each layer's terms by ``benchmarks.perf._lean.iter_layer_terms`` (GQA summed in the weights, FFN in blocks read
  and converted as used, whitening applied in fp32 (the probe rows' too), ``eigh`` on one thread, each term
  handed on as soon as it is computed) instead of ``owner._invariants.layer_terms`` on fp32 ``LayerWeights``;
- the invariants file written as the terms are computed (header first, every shape being known, then each term
  at its offset as soon as it exists) instead of ``owner._invfile.save_invariants`` on an ``InvariantSet``
  holding every term, which also serialises the whole file in memory first. The file has the same format and
  metadata and loads with ``owner.load_invariants``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.perf import _lean
from owner import build_probe_set, load_vocabulary, map_probes, open_model
from owner._invariants import METHOD_IDS, TERMS, resolve_layers
from owner._invfile import FORMAT
from owner._source import SafetensorsSource, prefetch


class StreamingInvariantsFile:
    """``owner._invfile.save_invariants``'s file, written as the terms are computed: the header (every term's
    shape is known before the first is computed) first, then each term at its offset as soon as it exists, so
    the agent never holds more than one layer's terms. Atomic: a temporary file renamed by ``close``."""

    def __init__(self, path: Path, inv_meta: dict[str, object], keys: list[str], m: int) -> None:
        self.path = path
        self.size = m * m * 4
        header: dict[str, object] = {"__metadata__": {"pawprint": json.dumps(inv_meta, sort_keys=True,
                                                                             ensure_ascii=False)}}
        self.offsets = {}
        for i, key in enumerate(sorted(keys)):
            header[key] = {"dtype": "F32", "shape": [m, m], "data_offsets": [i * self.size, (i + 1) * self.size]}
            self.offsets[key] = i * self.size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.base = 8 + len(raw)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.f = os.fdopen(fd, "wb")
        self.f.write(len(raw).to_bytes(8, "little") + raw)
        self.f.truncate(self.base + len(keys) * self.size)
        self.written: set[str] = set()

    def write(self, key: str, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype="<f4")
        if a.nbytes != self.size:
            raise ValueError(f"{key}: {a.nbytes} bytes, expected {self.size}")
        self.f.seek(self.base + self.offsets[key])
        self.f.write(a.data.cast("B"))
        self.written.add(key)

    def close(self) -> None:
        if self.written != set(self.offsets):
            self.abort()
            raise ValueError("not every term was written")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        Path(self.tmp).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    m = open_model(args.model)
    if m.adapter.info.family not in ("llama", "mistral", "qwen2") or not isinstance(m.source, SafetensorsSource):
        raise SystemExit("the prototype handles LLaMA-family safetensors checkpoints only")
    vocab = load_vocabulary(m.root)
    probes = build_probe_set(vocab)
    mapping = map_probes(probes, vocab)
    info = m.adapter.info
    layers = resolve_layers(None, info.n_layers)
    present = tuple(i is not None for i in mapping.ids)
    meta: dict[str, object] = {
        "format": FORMAT, "method": "pawprint", "method_id": METHOD_IDS["pawprint"],
        "probe_set": {"id": probes.id, "name": probes.name, "version": probes.version, "rule": probes.rule},
        "tokens": list(probes.tokens), "present": list(present), "layers": list(layers),
        "model": {"format": m.format, **info.as_dict()},
    }
    out = StreamingInvariantsFile(args.output, meta, [f"layer{la}.{t}" for la in layers for t in TERMS], sum(present))
    try:
        with torch.inference_mode():
            x = m.adapter.embedding_rows(list(mapping.present_ids()))
            er = _lean.whiten(x, fp32_apply=True)  # RMSNorm: the rows are not centred
            for k, layer in enumerate(layers):
                if k + 1 < len(layers):
                    prefetch(m.source, m.adapter.layer_tensor_names(layers[k + 1]))
                reader = _lean.LayerReader(m.source, layer, m.adapter.prefix)
                for name, t in _lean.iter_layer_terms(x, er, reader, info):
                    out.write(f"layer{layer}.{name}", t.numpy())
                    del t
        out.close()
    except BaseException:
        out.abort()
        raise
    print(json.dumps({"wall_s": time.perf_counter() - t0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
