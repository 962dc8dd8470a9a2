"""What every architecture adapter provides: the canonical per-layer weights the invariant terms need.

An adapter turns one family's checkpoint layout (names, fused tensors, Conv1D transposes, stored norm
conventions) into plain matrices in HF ``Linear`` layout ``(out, in)``:

- attention: ``wq (Hq*dh, d)``, ``wk, wv (Hkv*dh, d)``, ``wo (d, Hq*dh)``; query head ``h`` uses KV head
  ``h // (Hq // Hkv)`` (the grouping of GQA/MQA);
- FFN: gated ``w_gate, w_up (h, d)``, ``w_down (d, h)``; plain ``w_up`` is ``Win (h, d)``, ``w_down`` is ``Wout``;
- the norm weights ``g1`` (before attention) and ``g2`` (before the FFN) as the model applies them.

The matrices stay in the dtype the checkpoint stores them in (``layer(..., stored=True)``, what the agent asks
for: ``owner._invariants`` converts them to fp32 a block at a time, so a bf16 layer is held at its stored size);
the norm weights are always fp32. Adapters only read tensors through a ``TensorSource`` and never return anything
but these matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch

from owner._source import TensorSource, read_weight
from owner.errors import CheckpointError

NormKind = Literal["rms", "layer", "post"]
Method = Literal["pawprint", "huref-2024"]
METHODS: tuple[Method, ...] = ("pawprint", "huref-2024")


@dataclass(frozen=True)
class ArchInfo:
    """Shape facts of a model, read from its config and checked against its tensors."""

    family: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ffn: int
    vocab_size: int
    norm: NormKind
    gated_ffn: bool
    parallel_residual: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


FfnWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # one gated FFN: gate (h, d), up (h, d), down (d, h)
Scoring = Literal["softmax", "sigmoid"]


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.float32)


def _ffn_f32(f: FfnWeights) -> FfnWeights:
    return (f[0].float(), f[1].float(), f[2].float())


@dataclass(frozen=True)
class MoeWeights:
    """A mixture-of-experts FFN (Mixtral, Qwen2-MoE, DeepSeek-MoE) as the model routes it.

    ``router (E, d)`` scores the normed input; ``scoring`` turns the logits into scores (softmax over experts,
    or a per-expert sigmoid); the ``top_k`` experts with the largest ``score + score_bias`` are kept, chosen
    within the ``topk_group`` best of ``n_group`` expert groups (a group's score is the sum of its ``group_top``
    best experts: 2 for DeepSeek-V3, 1, the best alone, for DeepSeek-V2's group-limited greedy), their scores
    renormalised to sum 1 when ``norm_topk``, then multiplied by ``scale``.
    ``shared`` experts see every token, Qwen2-MoE's gated by ``sigmoid(shared_gate x)`` (``shared_gate (1, d)``).
    """

    router: torch.Tensor
    experts: tuple[FfnWeights, ...]
    top_k: int
    scoring: Scoring
    norm_topk: bool
    scale: float = 1.0
    score_bias: torch.Tensor | None = None
    n_group: int = 1
    topk_group: int = 1
    shared: tuple[FfnWeights, ...] = ()
    shared_gate: torch.Tensor | None = None
    group_top: int = 2

    def float(self) -> MoeWeights:
        return replace(
            self, router=self.router.float(), experts=tuple(_ffn_f32(e) for e in self.experts),
            score_bias=_f32(self.score_bias), shared=tuple(_ffn_f32(e) for e in self.shared),
            shared_gate=_f32(self.shared_gate),
        )


@dataclass(frozen=True)
class MlaWeights:
    """DeepSeek-V2/V3 multi-head latent attention, in HF ``Linear`` layout.

    Queries: ``q_b (H*(dn+dr), rq) @ rms(q_a (rq, d) x) * q_a_norm`` (or ``q_proj (H*(dn+dr), d) x`` when
    ``q_lora_rank`` is null: ``q_a`` and ``q_a_norm`` are then ``None`` and ``q_b`` reads the stream); each head's
    rows are ``[nope (dn), rope (dr)]``. Keys and values: ``kv_a (rkv + dr, d) x`` is split into a latent ``c``
    (``rkv``) and one rotary key shared by all heads (``dr``); ``kv_b (H*(dn+dv), rkv) @ rms(c) * kv_a_norm`` gives
    per head ``[k_nope (dn), v (dv)]``. ``o (d, H*dv)``.
    """

    q_a: torch.Tensor | None
    q_a_norm: torch.Tensor | None
    q_b: torch.Tensor
    kv_a: torch.Tensor
    kv_a_norm: torch.Tensor
    kv_b: torch.Tensor
    n_heads: int
    nope_dim: int
    rope_dim: int
    v_dim: int
    kv_rank: int

    def float(self) -> MlaWeights:
        return replace(
            self, q_a=_f32(self.q_a), q_a_norm=_f32(self.q_a_norm), q_b=self.q_b.float(), kv_a=self.kv_a.float(),
            kv_a_norm=self.kv_a_norm.float(), kv_b=self.kv_b.float(),
        )


@dataclass(frozen=True)
class LayerWeights:
    """One layer's matrices in canonical layout, in their stored dtype or fp32 (``float``); norm weights fp32."""

    index: int
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    w_up: torch.Tensor
    w_down: torch.Tensor
    w_gate: torch.Tensor | None
    g1: torch.Tensor | None
    g2: torch.Tensor | None
    # a mixture-of-experts FFN replaces the dense one (``w_up, w_down`` are then empty, ``w_gate`` None)
    moe: MoeWeights | None = None
    # latent attention replaces ``wq..wo`` (``wq, wk, wv`` empty; ``wo`` is ``mla``'s output projection)
    mla: MlaWeights | None = None
    # QK-norm (Qwen3, OLMo-2, Gemma-3): RMSNorm weights applied to the query / key projections before the dot
    # product, as the model applies them; ``(head_dim,)`` is per head (shared by all heads), ``(H*head_dim,)``
    # normalises all heads' projections together (OLMo-2). ``owner._invariants.qk_norm_term`` reads them.
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None

    def float(self) -> LayerWeights:
        """The same matrices in fp32 (unchanged where they already are)."""

        def f(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(torch.float32)

        return replace(
            self, wq=self.wq.float(), wk=self.wk.float(), wv=self.wv.float(), wo=self.wo.float(),
            w_up=self.w_up.float(), w_down=self.w_down.float(), w_gate=f(self.w_gate), g1=f(self.g1), g2=f(self.g2),
            moe=None if self.moe is None else self.moe.float(), mla=None if self.mla is None else self.mla.float(),
        )


def cfg_int(config: dict[str, Any], *keys: str, default: int | None = None) -> int:
    """The first of ``keys`` present in ``config`` as an int (configs spell the same field differently)."""
    for k in keys:
        v = config.get(k)
        if v is not None:
            if not isinstance(v, int) or isinstance(v, bool):
                raise CheckpointError(f"config.json: field {k!r} should be an integer, got {v!r}")
            return v
    if default is not None:
        return default
    raise CheckpointError(f"config.json: missing field {' / '.join(repr(k) for k in keys)}")


class Adapter:
    """Base class: subclasses set ``model_types`` and implement the layout-specific parts."""

    model_types: ClassVar[tuple[str, ...]] = ()
    # candidate prefixes in front of the base-model tensor names (e.g. "model." in *ForCausalLM checkpoints)
    prefixes: ClassVar[tuple[str, ...]] = ("",)
    embedding_suffix: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any], source: TensorSource, *, prefix: str | None = None) -> None:
        """``prefix``: the exact prefix of the base-model tensor names, for a model stored inside a larger
        checkpoint (``owner._multimodal``); by default it is found among ``prefixes``."""
        self.config = config
        self.source = source
        self._names = set(source.names())
        self.prefix = self._find_prefix() if prefix is None else self._find_prefix((prefix,))
        self.info = self._read_info()
        self._check_shapes()

    # -- layout-specific -------------------------------------------------------------------------------
    def _read_info(self) -> ArchInfo:
        raise NotImplementedError

    def layer_tensor_names(self, layer: int) -> list[str]:
        """Names of every tensor read for ``layer``."""
        raise NotImplementedError

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        """The layer's matrices as ``weight`` reads them (stored dtype), norm weights fp32."""
        raise NotImplementedError

    def layer(self, layer: int, method: Method = "pawprint", *, stored: bool = False) -> LayerWeights:
        """Layer ``layer``'s weights: in fp32, or with ``stored`` in the dtype the checkpoint stores them in."""
        w = self._layer(layer, method)
        return w if stored else w.float()

    # -- shared ----------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.model_types[0]

    def _find_prefix(self, candidates: Sequence[str] | None = None) -> str:
        candidates = self.prefixes if candidates is None else candidates
        for p in candidates:
            if p + self.embedding_suffix in self._names:
                return p
        raise CheckpointError(
            f"checkpoint has no token embedding {self.embedding_suffix!r} (tried prefixes "
            f"{', '.join(repr(p) for p in candidates)}) for a {self.model_types[0]} model"
        )

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def embedding_name(self) -> str:
        return self.name(self.embedding_suffix)

    def embedding_tensor_names(self) -> list[str]:
        return [self.embedding_name()]

    def embedding_rows(self, ids: Sequence[int]) -> torch.Tensor:
        """The probe rows as they enter the residual stream (fp32, ``n x d``)."""
        return self.source.rows(self.embedding_name(), ids)

    def tensor(self, suffix: str) -> torch.Tensor:
        """A tensor in fp32 (norm weights, embedding-side tensors)."""
        return self.source.tensor(self.name(suffix))

    def weight(self, suffix: str) -> torch.Tensor:
        """A weight matrix in its stored dtype (``read_weight``)."""
        return read_weight(self.source, self.name(suffix))

    def has(self, suffix: str) -> bool:
        return self.name(suffix) in self._names

    def _shape(self, suffix: str) -> tuple[int, ...]:
        return self.source.meta(self.name(suffix)).shape

    def expect_shape(self, suffix: str, shape: tuple[int, ...]) -> None:
        got = self._shape(suffix)
        if got != shape:
            meta = self.source.meta(self.name(suffix))
            raise CheckpointError(
                f"{meta.file}: tensor {meta.name!r} has shape {got}, but config.json implies {shape}"
            )

    def tensor_names(self, layers: Sequence[int]) -> list[str]:
        out = list(self.embedding_tensor_names())
        for layer in layers:
            out.extend(self.layer_tensor_names(layer))
        return out

    def _check_shapes(self) -> None:
        i = self.info
        emb = self._shape(self.embedding_suffix)
        if len(emb) != 2 or emb[1] != self._embedding_width():
            raise CheckpointError(
                f"{self.source.meta(self.embedding_name()).file}: embedding {self.embedding_name()!r} has "
                f"shape {emb}, but config.json implies width {self._embedding_width()}"
            )
        if i.n_heads % i.n_kv_heads:
            raise CheckpointError(
                f"config.json: {i.n_heads} attention heads are not a multiple of {i.n_kv_heads} KV heads"
            )
        for layer in range(i.n_layers):
            for n in self.layer_tensor_names(layer):
                if n not in self._names:
                    raise CheckpointError(
                        f"checkpoint has no tensor {n!r}, which a {i.family} model with {i.n_layers} layers "
                        "(per config.json) must have"
                    )
        self._check_layer_shapes(i.n_layers - 1)

    def _embedding_width(self) -> int:
        return self.info.d_model

    def _check_layer_shapes(self, layer: int) -> None:
        """Check one layer's shapes against the config (subclasses with odd layouts override)."""


def scale_rows(x: torch.Tensor, s: float) -> torch.Tensor:
    return x * s if s != 1.0 else x


def sqrt_d(d: int) -> float:
    return math.sqrt(d)


def split_interleaved_qkv(w: torch.Tensor, n_heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """Split a fused QKV laid out per head, ``[head][q, k, v][dh]`` (GPT-NeoX, BLOOM, old Falcon)."""
    d_in = w.shape[-1]
    v = w.reshape(n_heads, 3, head_dim, d_in)
    return tuple(v[:, j].reshape(n_heads * head_dim, d_in) for j in range(3))


def split_thirds(w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Split a fused QKV into three equal blocks of rows (GPT-2's layout; HuRef's reference code applies it
    to every fused tensor, which is wrong for per-head layouts)."""
    if w.shape[0] % 3:
        raise CheckpointError(f"fused QKV with {w.shape[0]} rows cannot be split in thirds")
    n = w.shape[0] // 3
    return w[:n], w[n : 2 * n], w[2 * n :]


class PlainAdapter(Adapter):
    """Families with separate q/k/v/o and a two-matrix FFN, described by name templates.

    Templates use ``{i}`` for the layer index, relative to the detected prefix. ``conv1d`` marks GPT-2's
    ``Conv1D`` storage ``(in, out)``, transposed here to ``(out, in)``.
    """

    q: ClassVar[str] = ""
    k: ClassVar[str] = ""
    v: ClassVar[str] = ""
    o: ClassVar[str] = ""
    up: ClassVar[str] = ""
    down: ClassVar[str] = ""
    norm1: ClassVar[str | None] = None
    norm2: ClassVar[str | None] = None
    conv1d: ClassVar[bool] = False
    # A fused QKV (``q == k == v``) is split per head ``[head][q,k,v][dh]`` when set, else in thirds.
    fused_per_head: ClassVar[bool] = False

    def _t(self, template: str, layer: int) -> torch.Tensor:
        w = self.weight(template.format(i=layer))
        return w.T if self.conv1d and w.dim() == 2 else w

    def _attn_templates(self) -> list[str]:
        return [self.q, self.k, self.v, self.o]

    def layer_tensor_names(self, layer: int) -> list[str]:
        ts = [*self._attn_templates(), self.up, self.down]
        ts += [n for n in (self.norm1, self.norm2) if n]
        return [self.name(t.format(i=layer)) for t in dict.fromkeys(ts)]

    def _check_layer_shapes(self, layer: int) -> None:
        i = self.info
        q, kv = i.n_heads * i.head_dim, i.n_kv_heads * i.head_dim
        expect = [(self.o, (i.d_model, q)), (self.up, (i.d_ffn, i.d_model)), (self.down, (i.d_model, i.d_ffn))]
        if self.q != self.k:
            expect += [(self.q, (q, i.d_model)), (self.k, (kv, i.d_model)), (self.v, (kv, i.d_model))]
        else:
            expect += [(self.q, (q + 2 * kv, i.d_model))]
        for tmpl, shape in expect:
            got = self._shape(tmpl.format(i=layer))
            if self.conv1d:
                got = got[::-1]
            if got != shape:
                meta = self.source.meta(self.name(tmpl.format(i=layer)))
                raise CheckpointError(
                    f"{meta.file}: tensor {meta.name!r} has shape {meta.shape}, but config.json implies "
                    f"{shape[::-1] if self.conv1d else shape}"
                )

    def qkv(self, layer: int, method: Method) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.q != self.k:
            return self._t(self.q, layer), self._t(self.k, layer), self._t(self.v, layer)
        w = self._t(self.q, layer)
        if self.fused_per_head and method != "huref-2024":  # the reference code splits every fused QKV in thirds
            q, k, v = split_interleaved_qkv(w, self.info.n_heads, self.info.head_dim)
        else:
            q, k, v = split_thirds(w)
        return q, k, v

    def norms(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        g1 = self.tensor(self.norm1.format(i=layer)) if self.norm1 else None
        g2 = self.tensor(self.norm2.format(i=layer)) if self.norm2 else None
        return g1, g2

    def _layer(self, layer: int, method: Method) -> LayerWeights:
        wq, wk, wv = self.qkv(layer, method)
        g1, g2 = self.norms(layer)
        return LayerWeights(
            index=layer, wq=wq, wk=wk, wv=wv, wo=self._t(self.o, layer),
            w_up=self._t(self.up, layer), w_down=self._t(self.down, layer), w_gate=None, g1=g1, g2=g2,
        )
