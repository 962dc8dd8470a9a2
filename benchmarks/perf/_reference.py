"""The published HuRef pipeline, re-implemented for timing: the whole model in fp32, then the products.

    python -m benchmarks.perf._reference MODEL --ids IDS.json --out TERMS.npy

What the reference code (LUMIA-Group/HuRef ``main.py``) does, step for step: load the model with
``AutoModelForCausalLM.from_pretrained`` in fp32 (its default), take ``model.state_dict()``, gather the embedding
rows of the 4096 selected token ids, form three products per layer for the last two layers, stack them and
``np.save`` them. The products are computed by ``owner._invariants.layer_terms`` itself, on weights taken from
the state dict (not through the agent's readers), so the two outputs can be checked against each other and
the comparison times the pipeline (load everything in fp32, then compute), not a different formula. Phases
(load, products, save) and this process's peak RSS are printed as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def terms(state: dict[str, torch.Tensor], ids: list[int], config: Any) -> list[torch.Tensor]:
    """The last two layers' terms from the state dict: weights as the model holds them, products by
    ``owner._invariants.layer_terms`` (the same arithmetic as the agent, whitened rows computed once as it does)."""
    from owner._adapters import ArchInfo, LayerWeights
    from owner._agent import whitened_rows
    from owner._invariants import layer_terms

    d, heads = config.hidden_size, config.num_attention_heads
    info = ArchInfo("llama", config.num_hidden_layers, d, heads, config.num_key_value_heads, d // heads,
                    config.intermediate_size, config.vocab_size, "rms", True, False)
    x = state["model.embed_tokens.weight"][ids]
    rows = whitened_rows(x, info, "pawprint")
    out: list[torch.Tensor] = []
    for i in range(info.n_layers - 2, info.n_layers):
        p = f"model.layers.{i}."
        w = LayerWeights(
            i, state[p + "self_attn.q_proj.weight"], state[p + "self_attn.k_proj.weight"],
            state[p + "self_attn.v_proj.weight"], state[p + "self_attn.o_proj.weight"],
            state[p + "mlp.up_proj.weight"], state[p + "mlp.down_proj.weight"], state[p + "mlp.gate_proj.weight"],
            state[p + "input_layernorm.weight"], state[p + "post_attention_layernorm.weight"],
        )
        out.extend(layer_terms(x, w, info, whiten_rows=rows).values())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--ids", type=Path, required=True, help="JSON list of the probe token ids")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    from transformers import AutoModelForCausalLM

    ids = json.loads(args.ids.read_text())
    t_import = time.perf_counter()
    with torch.inference_mode():
        model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32, local_files_only=True)
        state = model.state_dict()
        t_load = time.perf_counter()
        result = terms(state, ids, model.config)
        t_terms = time.perf_counter()
        np.save(args.out, torch.stack(result).numpy())
    t_save = time.perf_counter()
    print(json.dumps({
        "import_s": t_import - t0, "load_s": t_load - t_import, "terms_s": t_terms - t_load, "save_s": t_save - t_terms,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
