"""Architecture adapters, one per family, chosen from ``config.json``'s ``model_type`` and checked against the
tensors present (never from the model's name)."""

from __future__ import annotations

from typing import Any

from owner._adapters._base import METHODS, Adapter, ArchInfo, LayerWeights, Method, MlaWeights, MoeWeights, NormKind
from owner._adapters.baichuan import BaichuanAdapter
from owner._adapters.bert import BertAdapter
from owner._adapters.bloom import BloomAdapter
from owner._adapters.deepseek import DeepseekV3Adapter
from owner._adapters.deepseek_v2 import DeepseekV2Adapter
from owner._adapters.falcon import FalconAdapter
from owner._adapters.gemma import GemmaAdapter
from owner._adapters.gemma2 import Gemma2Adapter, Gemma3TextAdapter
from owner._adapters.gpt2 import Gpt2Adapter
from owner._adapters.gpt_neox import GptNeoXAdapter
from owner._adapters.gptj import GptJAdapter
from owner._adapters.internlm import InternLM2Adapter, InternLMAdapter
from owner._adapters.llama import LlamaAdapter
from owner._adapters.moe import MixtralAdapter, Qwen2MoeAdapter
from owner._adapters.mpnet import MPNetAdapter
from owner._adapters.mpt import MptAdapter
from owner._adapters.olmo2 import Olmo2Adapter
from owner._adapters.opt import OptAdapter
from owner._adapters.phi3 import Phi3Adapter
from owner._adapters.qwen1 import Qwen1Adapter
from owner._adapters.qwen3 import Qwen3Adapter
from owner._adapters.qwen3_moe import Qwen3MoeAdapter
from owner._source import TensorSource
from owner.errors import UnsupportedModelError

ADAPTERS: tuple[type[Adapter], ...] = (
    LlamaAdapter, GemmaAdapter, Phi3Adapter, Gpt2Adapter, GptNeoXAdapter, GptJAdapter, OptAdapter,
    FalconAdapter, BloomAdapter, BertAdapter,
    MptAdapter, BaichuanAdapter, InternLMAdapter, InternLM2Adapter, Qwen1Adapter,
    Qwen3Adapter, Olmo2Adapter, Gemma2Adapter, Gemma3TextAdapter, MPNetAdapter,
    MixtralAdapter, Qwen2MoeAdapter, DeepseekV3Adapter, Qwen3MoeAdapter, DeepseekV2Adapter,
)
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(t for a in ADAPTERS for t in a.model_types if t.islower())


def select_adapter(config: dict[str, Any], source: TensorSource, config_path: str = "config.json") -> Adapter:
    """The adapter for ``config['model_type']``; an unknown family is a clear error naming the supported."""
    model_type = config.get("model_type")
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(config, source)
    raise UnsupportedModelError(
        f"{config_path}: model_type {model_type!r} is not supported; supported families: "
        f"{', '.join(SUPPORTED_FAMILIES)}"
    )


__all__ = [
    "ADAPTERS", "METHODS", "SUPPORTED_FAMILIES", "Adapter", "ArchInfo", "LayerWeights", "Method", "MlaWeights",
    "MoeWeights", "NormKind",
    "select_adapter",
]
