"""Canonical tensor names and the Hugging Face -> canonical name table.

Canonical names are the original ``consolidated.safetensors`` names without the prefix
``mm_streams_embeddings.embedding_module.``; they equal the parameter names of
:class:`asr.model.VoxtralRealtime` (decoder modules at top level). Canonical q/k rows are in
the NeoX "halves" order of HF checkpoints; original-layout files are permuted at load by
:func:`interleaved_to_halves`.
"""

from __future__ import annotations

import re

import torch

from asr.config import ModelConfig

CONSOLIDATED_PREFIX = "mm_streams_embeddings.embedding_module."

# HF suffix (after the part prefix and layer index) -> canonical suffix.
_HF_ENCODER_LAYER = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.q_proj.bias": "attention.wq.bias",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.v_proj.bias": "attention.wv.bias",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "self_attn.o_proj.bias": "attention.wo.bias",
    "self_attn_layer_norm.weight": "attention_norm.weight",
    "final_layer_norm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.down_proj.bias": "feed_forward.w2.bias",
}
_HF_DECODER_LAYER = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "ada_rms_norm.linear1.weight": "ada_rms_norm_t_cond.0.weight",
    "ada_rms_norm.linear2.weight": "ada_rms_norm_t_cond.2.weight",
}
_HF_SINGLE = {
    "audio_tower.embedder.conv1.weight": "whisper_encoder.conv_layers.0.conv.weight",
    "audio_tower.embedder.conv1.bias": "whisper_encoder.conv_layers.0.conv.bias",
    "audio_tower.embedder.conv2.weight": "whisper_encoder.conv_layers.1.conv.weight",
    "audio_tower.embedder.conv2.bias": "whisper_encoder.conv_layers.1.conv.bias",
    "audio_tower.norm.weight": "whisper_encoder.transformer.norm.weight",
    "multi_modal_projector.linear_1.weight": "audio_language_projection.0.weight",
    "multi_modal_projector.linear_2.weight": "audio_language_projection.2.weight",
    "language_model.embed_tokens.weight": "tok_embeddings.weight",
    "language_model.norm.weight": "norm.weight",
}
# The tied output head; dropped (checked equal to the embeddings when present).
HF_TIED_HEAD = "lm_head.weight"

_LAYER = re.compile(r"^(audio_tower|language_model)\.layers\.(\d+)\.(.+)$")


def normalize_hf_name(name: str) -> str:
    """Strip the prefixes that differ between transformers releases.

    5.2-5.9 wrote ``language_model.model.*``, ``audio_tower.*``, ``multi_modal_projector.*`` and
    ``language_model.lm_head``; 5.10+ use ``model.audio_tower.*``, ``model.language_model.*``,
    ``model.multi_modal_projector.*`` and ``lm_head`` (and some releases save
    ``language_model.model.model.*``). All become ``audio_tower.*``, ``language_model.*``,
    ``multi_modal_projector.*`` or ``lm_head.weight``.
    """
    while name.startswith("model."):
        name = name[len("model.") :]
    if name.startswith("language_model."):
        rest = name[len("language_model.") :]
        while rest.startswith("model."):
            rest = rest[len("model.") :]
        if rest == "lm_head.weight":
            return HF_TIED_HEAD
        return "language_model." + rest
    return name


def hf_to_canonical(name: str) -> str | None:
    """HF tensor name -> canonical name; None for names this model does not have."""
    name = normalize_hf_name(name)
    if name in _HF_SINGLE:
        return _HF_SINGLE[name]
    match = _LAYER.match(name)
    if not match:
        return None
    part, index, suffix = match.groups()
    if part == "audio_tower":
        mapped = _HF_ENCODER_LAYER.get(suffix)
        return None if mapped is None else f"whisper_encoder.transformer.layers.{index}.{mapped}"
    mapped = _HF_DECODER_LAYER.get(suffix)
    return None if mapped is None else f"layers.{index}.{mapped}"


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor of a configuration with its torch shape."""
    from asr.model import VoxtralRealtime  # local import: model imports nothing from weights

    with torch.device("meta"):
        net = VoxtralRealtime(cfg)
    return {VoxtralRealtime.canonical_name(n): tuple(p.shape) for n, p in net.named_parameters()}


def rope_rows(canonical: str, cfg: ModelConfig) -> int | None:
    """Heads of a q/k tensor (rows are permuted per head between layouts); None for other tensors."""
    if canonical.startswith("whisper_encoder.") and re.search(r"attention\.w[qk]\.(weight|bias)$", canonical):
        return cfg.encoder.n_heads
    if canonical.startswith("layers.") and canonical.endswith("attention.wq.weight"):
        return cfg.decoder.n_heads
    if canonical.startswith("layers.") and canonical.endswith("attention.wk.weight"):
        return cfg.decoder.n_kv_heads
    return None


def interleaved_to_halves_index(n_heads: int, head_dim: int) -> torch.Tensor:
    """Row order that turns interleaved RoPE pairs (2i, 2i+1) into halves (i, i + hd/2), per head.

    new_row[h, j] = old_row[h, 2j] for j < hd/2, old_row[h, 2(j - hd/2) + 1] otherwise.
    """
    per_head = torch.arange(head_dim).view(head_dim // 2, 2).t().reshape(-1)  # [0, 2, 4, ..., 1, 3, ...]
    return (torch.arange(n_heads)[:, None] * head_dim + per_head[None, :]).reshape(-1)


def interleaved_to_halves(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute the rows of an original-layout q/k weight [H*hd, in] or bias [H*hd]."""
    head_dim = t.shape[0] // n_heads
    return t.index_select(0, interleaved_to_halves_index(n_heads, head_dim).to(t.device))
