"""The language model inside a multimodal checkpoint: found by config and structure, read alone.

A vision-language checkpoint holds a language model of a known family beside a vision tower and a projector.
The terms are those of the language model alone, so it is located, read through its family's adapter at the
prefix where it sits, and fingerprinted as that family; no tensor outside it is read for the terms (the weight
commitment still covers every tensor of the checkpoint: it commits to the files as they are).

Where the family and shapes come from (the config):

- a composite config with a ``text_config`` object (transformers' LLaVA, LLaVA-NeXT, Mistral3, PaliGemma, ...):
  the text model's ``model_type`` and shapes. transformers before 4.4x saved sub-configs as differences from
  their class defaults, so fields it leaves out take those defaults (``TEXT_DEFAULTS``, for the families read);
- the original LLaVA repository's ``llava_llama`` / ``llava_mistral`` / ``llava_qwen`` configs: a text model's
  config under another ``model_type`` (``LLAVA_ORIGINAL``), the projector and vision tower beside its tensors;
- a text model's own ``config.json`` beside weights that keep it under another prefix, such as a merged
  MiniGPT-4 state dict (``llama_model.*`` beside ``llama_proj``, ``Qformer`` and ``visual_encoder``).

Where it sits (the structure): each tensor name ending in the family's token-embedding name (``embed_tokens.
weight`` for LLaMA) marks a candidate prefix (``language_model.model.`` and ``model.language_model.`` as
different transformers versions save LLaVA, ``llama_model.model.``). A candidate counts only if the whole layer
stack the config describes is there with the shapes it implies, and no further layer follows it. One candidate
is the language model; none, or more than one, is an error that says how to name it (``lm_prefix``: the module
path of the language model, e.g. ``language_model.``).
"""

from __future__ import annotations

from typing import Any

from owner._adapters import ADAPTERS, SUPPORTED_FAMILIES, Adapter, select_adapter
from owner._source import TensorSource
from owner.errors import CheckpointError, UnsupportedModelError

# The defaults of transformers' config classes for the structural fields the adapters read, where a default is
# a constant (a default derived from other fields, such as LLaMA's key-value heads = attention heads, is left to
# the adapter, which derives it the same way). tests/owner/test_multimodal.py checks them against transformers.
TEXT_DEFAULTS: dict[str, dict[str, int]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=16, head_dim=256),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32),
}
# The original LLaVA repository's model types: the text model's config, under the multimodal model's name.
LLAVA_ORIGINAL: dict[str, str] = {"llava_llama": "llama", "llava_mistral": "mistral", "llava_qwen": "qwen2"}
HOW_TO_NAME = ("name the language model's module path, e.g. 'language_model.', with --lm-prefix PREFIX (the "
               "`pawprint owner` commands; compare their invariants file or bundle) or open_model(lm_prefix=...)")


def text_config(config: dict[str, Any], config_path: str) -> tuple[dict[str, Any], str | None]:
    """``(the language model's config, the multimodal model_type or None for a text model's own config)``."""
    model_type = config.get("model_type")
    if "text_config" in config:
        text = config["text_config"]
        if not isinstance(text, dict):
            raise CheckpointError(f"{config_path}: 'text_config' should be an object, got {type(text).__name__}")
        family = text.get("model_type")
        if not isinstance(family, str):
            raise CheckpointError(f"{config_path}: 'text_config' has no model_type (the language model's family)")
        defaults = TEXT_DEFAULTS.get(family, {})
        return {**defaults, **text}, str(model_type)
    if isinstance(model_type, str) and model_type in LLAVA_ORIGINAL:
        return {**config, "model_type": LLAVA_ORIGINAL[model_type]}, model_type
    return config, None


def _find_class(config: dict[str, Any]) -> type[Adapter] | None:
    model_type = config.get("model_type")
    return next((cls for cls in ADAPTERS if model_type in cls.model_types), None)


def _adapter_class(config: dict[str, Any], config_path: str, container: str | None) -> type[Adapter]:
    cls = _find_class(config)
    if cls is not None:
        return cls
    where = f"the language model of this {container} checkpoint has model_type" if container else "model_type"
    raise UnsupportedModelError(
        f"{config_path}: {where} {config.get('model_type')!r} is not supported; supported families: "
        f"{', '.join(SUPPORTED_FAMILIES)}"
    )


def embedding_prefixes(cls: type[Adapter], names: list[str]) -> list[str]:
    """Every prefix in front of ``cls``'s token-embedding name among ``names`` (the candidate positions)."""
    s = cls.embedding_suffix
    return sorted(n[: -len(s)] for n in names if n.endswith(s) and (len(n) == len(s) or n[-len(s) - 1] == "."))


def normal_prefix(lm_prefix: str) -> str:
    """``lm_prefix`` as a tensor-name prefix: ``''`` (the whole checkpoint) or a module path ending in a dot."""
    if not lm_prefix:
        return ""
    if lm_prefix.startswith(".") or ".." in lm_prefix or any(c.isspace() for c in lm_prefix):
        raise CheckpointError(f"--lm-prefix {lm_prefix!r}: expected a module path such as 'language_model.'")
    return lm_prefix if lm_prefix.endswith(".") else lm_prefix + "."


def _at(cls: type[Adapter], config: dict[str, Any], source: TensorSource, names: set[str],
        prefix: str) -> Adapter:
    """``cls`` read at exactly ``prefix``, checked to have no layer beyond the ones the config counts."""
    adapter = cls(config, source, prefix=prefix)
    beyond = adapter.layer_tensor_names(adapter.info.n_layers)
    if beyond and all(n in names for n in beyond):
        raise CheckpointError(f"the checkpoint has more than the {adapter.info.n_layers} layers its config gives")
    return adapter


def open_language_model(
    config: dict[str, Any], source: TensorSource, config_path: str = "config.json", *, fmt: str = "safetensors",
    lm_prefix: str | None = None,
) -> Adapter:
    """The adapter that reads the checkpoint's language model: ``select_adapter``'s, unchanged, for a text
    model stored the usual way; located by config and structure (module docstring) otherwise."""
    text, container = text_config(config, config_path)
    names = source.names()
    name_set = set(names)
    if container is None and lm_prefix is None:
        plain = _find_class(text)
        if (plain is None or fmt == "onnx" or any(p + plain.embedding_suffix in name_set for p in plain.prefixes)
                or not embedding_prefixes(plain, names)):
            return select_adapter(config, source, config_path)  # a text model as usual (or its usual error)
    if fmt == "onnx":
        raise CheckpointError(f"{config_path}: the language model of a multimodal checkpoint is read from its "
                              "safetensors or .bin weights, not from an ONNX export (export the language model alone)")
    cls = _adapter_class(text, config_path, container)
    if lm_prefix is not None:
        root = normal_prefix(lm_prefix)
        candidates = [root + p for p in cls.prefixes if root + p + cls.embedding_suffix in name_set]
        if not candidates:
            raise CheckpointError(
                f"{config_path}: no {text['model_type']} token embedding {cls.embedding_suffix!r} under "
                f"--lm-prefix {root!r} (tried {', '.join(repr(root + p) for p in cls.prefixes)})"
            )
    else:
        candidates = embedding_prefixes(cls, names)
    found: list[Adapter] = []
    reasons: list[str] = []
    for prefix in candidates:
        try:
            found.append(_at(cls, text, source, name_set, prefix))
        except CheckpointError as e:
            reasons.append(f"{prefix!r}: {e}")
    what = f"{text['model_type']} language model" + (f" of this {container} checkpoint" if container else "")
    if len(found) == 1:
        return found[0]
    if not found:
        tried = f" (candidates: {'; '.join(reasons)})" if reasons else (
            f" (no tensor ends in {cls.embedding_suffix!r})")
        hint = "" if lm_prefix is not None else f"; {HOW_TO_NAME}"
        raise CheckpointError(f"{config_path}: no {what} found in the checkpoint{tried}{hint}")
    raise CheckpointError(
        f"{config_path}: more than one {what} in the checkpoint (at "
        f"{', '.join(repr(a.prefix) for a in found)}); {HOW_TO_NAME}"
    )
