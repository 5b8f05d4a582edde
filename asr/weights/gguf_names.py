"""Canonical tensor names and shapes, the transcribe.cpp name map, and the q/k RoPE row layouts.

Canonical names are Mistral's consolidated names without the prefix
``mm_streams_embeddings.embedding_module.`` (voxtral-realtime.md §7.1). Canonical q/k rows are in
the NeoX "halves" layout that Hugging Face uses (§2.4); Mistral's original weights, and the
TrevorS GGUF built from them, are in the interleaved layout and are permuted at load.
"""

from __future__ import annotations

import re

import torch

from asr.config import ModelConfig
from asr.errors import WeightsError
from asr.quant.tensor import QuantizedTensor
from asr.weights.names import CONSOLIDATED_PREFIX, interleaved_to_halves_index, rope_rows

Weight = torch.Tensor | QuantizedTensor

ENC = "whisper_encoder.transformer.layers"

# transcribe.cpp name -> canonical name, for per-layer tensors (after the layer index).
_TC_ENC_BLOCK = {
    "norm_attn.weight": "attention_norm.weight",
    "attn.q.weight": "attention.wq.weight", "attn.q.bias": "attention.wq.bias",
    "attn.k.weight": "attention.wk.weight",
    "attn.v.weight": "attention.wv.weight", "attn.v.bias": "attention.wv.bias",
    "attn.out.weight": "attention.wo.weight", "attn.out.bias": "attention.wo.bias",
    "norm_ffn.weight": "ffn_norm.weight",
    "ffn.gate.weight": "feed_forward.w1.weight", "ffn.up.weight": "feed_forward.w3.weight",
    "ffn.down.weight": "feed_forward.w2.weight", "ffn.down.bias": "feed_forward.w2.bias",
}
_TC_DEC_BLOCK = {
    "norm_attn.weight": "attention_norm.weight", "norm_ffn.weight": "ffn_norm.weight",
    "attn.q.weight": "attention.wq.weight", "attn.k.weight": "attention.wk.weight",
    "attn.v.weight": "attention.wv.weight", "attn.o.weight": "attention.wo.weight",
    "ffn.gate.weight": "feed_forward.w1.weight", "ffn.up.weight": "feed_forward.w3.weight",
    "ffn.down.weight": "feed_forward.w2.weight",
    "ada.linear_1.weight": "ada_rms_norm_t_cond.0.weight",
    "ada.linear_2.weight": "ada_rms_norm_t_cond.2.weight",
}
_TC_TOP = {
    "enc.conv.0.weight": "whisper_encoder.conv_layers.0.conv.weight",
    "enc.conv.0.bias": "whisper_encoder.conv_layers.0.conv.bias",
    "enc.conv.1.weight": "whisper_encoder.conv_layers.1.conv.weight",
    "enc.conv.1.bias": "whisper_encoder.conv_layers.1.conv.bias",
    "enc.final_norm.weight": "whisper_encoder.transformer.norm.weight",
    "proj.linear_1.weight": "audio_language_projection.0.weight",
    "proj.linear_2.weight": "audio_language_projection.2.weight",
    "dec.token_embd.weight": "tok_embeddings.weight",
    "dec.output_norm.weight": "norm.weight",
}
# Buffers transcribe.cpp bakes into its files; voxcap computes them itself, so they are skipped.
TRANSCRIBE_CPP_AUXILIARY = frozenset(
    {"frontend.mel_filterbank", "frontend.window", "dec.time_embed.inv_freq"})

_TC_BLOCK_RE = re.compile(r"^(enc|dec)\.blocks\.(\d+)\.(.+)$")
_CANON_ENC_RE = re.compile(r"^whisper_encoder\.transformer\.layers\.(\d+)\.(.+)$")
_CANON_DEC_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
_TC_TOP_INV = {v: k for k, v in _TC_TOP.items()}
_TC_ENC_INV = {v: k for k, v in _TC_ENC_BLOCK.items()}
_TC_DEC_INV = {v: k for k, v in _TC_DEC_BLOCK.items()}


def transcribe_cpp_to_canonical(name: str) -> str | None:
    """Canonical name for a transcribe.cpp tensor name, or None if it is not a model weight."""
    if name in _TC_TOP:
        return _TC_TOP[name]
    match = _TC_BLOCK_RE.match(name)
    if match is None:
        return None
    part, layer, rest = match.groups()
    if part == "enc" and rest in _TC_ENC_BLOCK:
        return f"{ENC}.{layer}.{_TC_ENC_BLOCK[rest]}"
    if part == "dec" and rest in _TC_DEC_BLOCK:
        return f"layers.{layer}.{_TC_DEC_BLOCK[rest]}"
    return None


def canonical_to_transcribe_cpp(name: str) -> str:
    """The transcribe.cpp tensor name of a canonical name (used to write test and bench files)."""
    if name in _TC_TOP_INV:
        return _TC_TOP_INV[name]
    if (match := _CANON_ENC_RE.match(name)) and match.group(2) in _TC_ENC_INV:
        return f"enc.blocks.{match.group(1)}.{_TC_ENC_INV[match.group(2)]}"
    if (match := _CANON_DEC_RE.match(name)) and match.group(2) in _TC_DEC_INV:
        return f"dec.blocks.{match.group(1)}.{_TC_DEC_INV[match.group(2)]}"
    raise WeightsError(f"no transcribe.cpp name for canonical tensor {name}")


def original_to_canonical(name: str) -> str:
    """Strip Mistral's embedding-module prefix (names without it are already canonical)."""
    return name[len(CONSOLIDATED_PREFIX):] if name.startswith(CONSOLIDATED_PREFIX) else name


def neox_from_interleaved(name: str, tensor: Weight, cfg: ModelConfig) -> Weight:
    """Convert Mistral-layout q/k rows (and the encoder q bias) to NeoX; other tensors unchanged.

    Per head, the rows become (even rows..., odd rows...), i.e.
    ``w.view(H, hd // 2, 2, -1).transpose(1, 2).reshape(H * hd, -1)``; exact for quantized
    weights too, because each row is a separate run of blocks.
    """
    return _permute(name, tensor, cfg, inverse=False)


def interleaved_from_neox(name: str, tensor: Weight, cfg: ModelConfig) -> Weight:
    """The inverse of :func:`neox_from_interleaved` (NeoX/HF layout back to Mistral's)."""
    return _permute(name, tensor, cfg, inverse=True)


def _permute(name: str, tensor: Weight, cfg: ModelConfig, inverse: bool) -> Weight:
    heads = rope_rows(name, cfg)
    if heads is None:
        return tensor
    n_rows = tensor.shape[0]
    if n_rows % heads or (n_rows // heads) % 2:
        raise WeightsError(f"cannot permute the q/k rows of tensor {name}: {n_rows} rows do not split "
                           f"into {heads} heads of an even head_dim")
    order = interleaved_to_halves_index(heads, n_rows // heads)
    if inverse:
        order = torch.argsort(order)
    if isinstance(tensor, QuantizedTensor):
        return tensor.permute_rows(order)
    return tensor.index_select(0, order.to(tensor.device))
