"""A tiny vision-language checkpoint around a zoo language model, in the layouts multimodal checkpoints use.

``make_vlm(base, out)`` builds transformers' ``LlavaForConditionalGeneration`` with a tiny CLIP vision tower (its
weights drawn from ``vision_seed``) and the LLaMA model in ``base`` (a zoo or tiny model directory) as its
language model, adds an ``<image>`` token to the tokenizer and grows the embedding for it (padded to a multiple
of 8, as the LLaVA-1.5 checkpoints are), and saves it in one of ``LAYOUTS``:

- ``llava``: as ``save_pretrained`` writes it, which is how LLaVA checkpoints on the Hub are stored:
  ``language_model.model.*``, ``language_model.lm_head.weight``, ``vision_tower.*``, ``multi_modal_projector.*``,
  a ``config.json`` with ``text_config`` and ``vision_config``;
- ``llava-nested``: the same tensors named as transformers 4.52 to 4.57 saved them: ``model.language_model.*``,
  ``model.vision_tower.*``, ``model.multi_modal_projector.*``, ``lm_head.weight``;
- ``llava-original``: the original LLaVA repository's layout: a LLaMA config with ``model_type`` ``llava_llama``,
  the LLaMA tensors where a LLaMA keeps them (``model.*``, ``lm_head.weight``), ``model.mm_projector.{0,2}.*``
  and ``model.vision_tower.vision_tower.*`` beside them;
- ``minigpt4``: a merged MiniGPT-4-style state dict: ``llama_model.model.*``, ``llama_model.lm_head.weight``, a
  one-matrix projector ``llama_proj.*`` and ``visual_encoder.*``, with the language model's own ``config.json``.

``add_qwen_visual(qwen, out)`` puts a tiny vision tower beside a first-Qwen checkpoint (``zoo.layouts``' ``qwen``
layout) as Qwen-VL ships one: ``transformer.visual.*`` tensors with the published names (an OpenCLIP ViT, its
attention pool and projection; random weights, as no transformers class builds Qwen-VL) and a ``visual`` object
in ``config.json``.

Nothing is downloaded. The language model's tensors are the base's, bit for bit, apart from the embedding and
head rows added for ``<image>`` and the padding; two builds that differ only in ``vision_seed`` differ only in
the vision tower and the projector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from zoo.progress import quiet_libraries

LAYOUTS: tuple[str, ...] = ("llava", "llava-nested", "llava-original", "minigpt4")
IMAGE_TOKEN = "<image>"
# (prefix as save_pretrained writes it, prefix in the layout); the first match renames a tensor, None drops it.
_RENAMES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "llava": (),
    "llava-nested": (
        ("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
        ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."),
    ),
    "llava-original": (
        ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."),
        ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ),
    "minigpt4": (
        ("language_model.", "llama_model."), ("multi_modal_projector.linear_1.", "llama_proj."),
        ("multi_modal_projector.linear_2.", None), ("vision_tower.", "visual_encoder."),
    ),
}


def _tiny_vision_config() -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=16)


def _with_image_token(tok_json: str) -> tuple[str, int]:
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(tok_json)
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    image_id = tok.token_to_id(IMAGE_TOKEN)
    if image_id is None:  # pragma: no cover - add_special_tokens always assigns an id
        raise RuntimeError("the tokenizer did not take the image token")
    return tok.to_str(), image_id


def _renamed(layout: str, name: str) -> str | None:
    for old, new in _RENAMES[layout]:
        if name.startswith(old):
            return None if new is None else new + name[len(old):]
    return name


def make_vlm(base: Path, out: Path, *, layout: str = "llava", vision_seed: int = 0) -> Path:
    """Build the tiny vision-language model around the LLaMA model in ``base`` and save it under ``out``."""
    import transformers
    from safetensors.torch import load_file, save_file

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    base, out = Path(base), Path(out)
    with quiet_libraries():
        lm = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    if lm.config.model_type != "llama":
        raise ValueError(f"{base}: a LLaMA language model is expected, found {lm.config.model_type!r}")
    tok_json, image_id = _with_image_token((base / "tokenizer.json").read_text(encoding="utf-8"))
    config = transformers.LlavaConfig(vision_config=_tiny_vision_config(), text_config=lm.config,
                                      image_token_index=image_id, image_seq_length=16)
    torch.manual_seed(vision_seed)
    vlm = transformers.LlavaForConditionalGeneration(config).eval()
    with torch.no_grad(), quiet_libraries():  # no note on how the new rows are drawn
        vlm.model.language_model.load_state_dict(lm.model.state_dict())
        vlm.lm_head.load_state_dict(lm.lm_head.state_dict())
        torch.manual_seed(0)  # the new rows do not depend on the vision seed
        vlm.resize_token_embeddings(image_id + 1, pad_to_multiple_of=8)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_libraries():
        vlm.save_pretrained(out, safe_serialization=True)
    (out / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    if layout == "llava":
        return out
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    renamed = {new: t for name, t in tensors.items() if (new := _renamed(layout, name)) is not None}
    save_file(renamed, weights, metadata={"format": "pt"})
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    text = dict(saved["text_config"])
    text.pop("_name_or_path", None)
    if layout == "minigpt4":  # MiniGPT-4 has no Hugging Face config: the language model's own stands beside it
        saved = {**text, "architectures": ["LlamaForCausalLM"]}
    elif layout == "llava-original":
        vision = saved["vision_config"]
        saved = {**text, "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama",
                 "mm_hidden_size": vision["hidden_size"], "mm_projector_type": "mlp2x_gelu",
                 "mm_vision_select_layer": -2, "mm_vision_tower": "tiny-clip", "image_aspect_ratio": "pad"}
    (out / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _qwen_visual_tensors(width: int, output_dim: int, layers: int, patch: int, grid: int, queries: int,
                         seed: int) -> dict[str, torch.Tensor]:
    """Qwen-VL's ``transformer.visual`` tensors (``visual.py`` of the published repository) at a tiny size."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return 0.02 * torch.randn(*shape, generator=gen)

    w, o, mlp = width, output_dim, 4 * width
    out: dict[str, torch.Tensor] = {
        "conv1.weight": r(w, 3, patch, patch), "positional_embedding": r(grid * grid, w),
        "ln_pre.weight": 1 + r(w), "ln_pre.bias": r(w), "ln_post.weight": 1 + r(o), "ln_post.bias": r(o),
        "proj": r(o, o), "attn_pool.query": r(queries, o), "attn_pool.pos_embed": r(grid * grid, o),
        "attn_pool.kv_proj.weight": r(o, w), "attn_pool.attn.in_proj_weight": r(3 * o, o),
        "attn_pool.attn.in_proj_bias": r(3 * o), "attn_pool.attn.out_proj.weight": r(o, o),
        "attn_pool.attn.out_proj.bias": r(o), "attn_pool.ln_q.weight": 1 + r(o), "attn_pool.ln_q.bias": r(o),
        "attn_pool.ln_kv.weight": 1 + r(o), "attn_pool.ln_kv.bias": r(o),
    }
    for i in range(layers):
        b = f"transformer.resblocks.{i}."
        out.update({
            b + "ln_1.weight": 1 + r(w), b + "ln_1.bias": r(w), b + "ln_2.weight": 1 + r(w), b + "ln_2.bias": r(w),
            b + "attn.in_proj_weight": r(3 * w, w), b + "attn.in_proj_bias": r(3 * w),
            b + "attn.out_proj.weight": r(w, w), b + "attn.out_proj.bias": r(w),
            b + "mlp.c_fc.weight": r(mlp, w), b + "mlp.c_fc.bias": r(mlp),
            b + "mlp.c_proj.weight": r(w, mlp), b + "mlp.c_proj.bias": r(w),
        })
    return {"transformer.visual." + k: v for k, v in out.items()}


def add_qwen_visual(qwen: Path, out: Path, *, vision_seed: int = 0) -> Path:
    """Copy the first-Qwen checkpoint ``qwen`` to ``out`` with a tiny Qwen-VL vision tower beside its tensors."""
    import shutil

    from safetensors.torch import load_file, save_file

    qwen, out = Path(qwen), Path(out)
    config = json.loads((qwen / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "qwen":
        raise ValueError(f"{qwen}: a first-Qwen checkpoint (model_type 'qwen') is expected")
    shutil.copytree(qwen, out)
    tensors = load_file(out / "model.safetensors")
    width, layers, patch, image = 16, 2, 8, 32
    tensors.update(_qwen_visual_tensors(width, config["hidden_size"], layers, patch, image // patch, 4,
                                        vision_seed))
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config["visual"] = {"heads": 2, "image_size": image, "image_start_id": config["vocab_size"], "layers": layers,
                        "mlp_ratio": 4.0, "output_dim": config["hidden_size"], "patch_size": patch, "width": width}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
