"""Build transformers' VoxtralRealtime from a loaded voxcap model, for ``bench --compare-reference``.

Only the benchmark uses this (transformers is a test/benchmark dependency, never needed to run
voxcap). Quantized weights are handed over dequantized in the model's compute dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from asr.errors import AsrError
from asr.runtime import Model
from asr.weights.names import _HF_DECODER_LAYER, _HF_ENCODER_LAYER, _HF_SINGLE


def hf_config_dict(model: Model) -> dict:
    enc, dec = model.cfg.encoder, model.cfg.decoder
    rope = lambda theta: {"rope_type": "default", "rope_theta": theta}  # noqa: E731
    return {
        "audio_config": dict(hidden_size=enc.dim, intermediate_size=enc.hidden_dim, num_hidden_layers=enc.n_layers,
                             num_attention_heads=enc.n_heads, head_dim=enc.head_dim, num_mel_bins=enc.n_mels,
                             sliding_window=enc.sliding_window, rms_norm_eps=enc.norm_eps,
                             rope_parameters=rope(enc.rope_theta)),
        "text_config": dict(vocab_size=dec.vocab_size, hidden_size=dec.dim, intermediate_size=dec.hidden_dim,
                            num_hidden_layers=dec.n_layers, num_attention_heads=dec.n_heads,
                            num_key_value_heads=dec.n_kv_heads, head_dim=dec.head_dim,
                            sliding_window=dec.sliding_window, max_position_embeddings=dec.max_positions,
                            rms_norm_eps=dec.norm_eps, rope_parameters=rope(dec.rope_theta)),
        "downsample_factor": model.cfg.downsample,
        "default_num_delay_tokens": model.cfg.default_delay_tokens,
    }  # fmt: skip


def canonical_to_hf(name: str) -> str:
    for hf, canonical in _HF_SINGLE.items():
        if canonical == name:
            return "model." + hf
    prefix, table, hf_prefix = (
        ("whisper_encoder.transformer.layers.", _HF_ENCODER_LAYER, "model.audio_tower.layers.")
        if name.startswith("whisper_encoder.")
        else ("layers.", _HF_DECODER_LAYER, "model.language_model.layers.")
    )
    index, _, suffix = name.removeprefix(prefix).partition(".")
    for hf, canonical in table.items():
        if canonical == suffix:
            return f"{hf_prefix}{index}.{hf}"
    raise AsrError(f"internal error: no transformers name for {name}")


def canonical_tensors(model: Model) -> dict[str, torch.Tensor]:
    """Every weight of the loaded network, dense, in the compute dtype, under canonical names.

    Fused projections (asr/fuse.py) are split back into their parts; quantized layers give the
    values they multiply by.
    """
    from asr.decoder import QuantizedTiedEmbedding
    from asr.model import VoxtralRealtime

    out: dict[str, torch.Tensor] = {}

    def put(path: str, tensor: torch.Tensor) -> None:
        out[VoxtralRealtime.canonical_name(path)] = tensor

    skip: set[str] = set()
    for path, module in model.net.named_modules():
        if path in skip:
            continue
        if isinstance(module, QuantizedTiedEmbedding):
            put(path + ".weight", module.linear.dense_weight(model.dtype))
            skip.add(path + ".linear")
            continue
        if isinstance(module, nn.Linear) or hasattr(module, "dense_weight"):
            weight = module.dense_weight(model.dtype) if hasattr(module, "dense_weight") else module.weight.data
            bias = module.bias
            parts = getattr(module, "parts", None) or [(path.rpartition(".")[2], weight.shape[0], bias is not None)]
            parent = path.rpartition(".")[0]
            sizes = [size for _, size, _ in parts]
            biases = bias.split(sizes) if bias is not None else [None] * len(parts)
            for (name, _, has_bias), w, b in zip(parts, weight.split(sizes), biases, strict=True):
                prefix = f"{parent}.{name}" if parent else name
                put(prefix + ".weight", w)
                if has_bias:  # a fused layer pads the bias of a part that had none (wk) with zeros
                    put(prefix + ".bias", b)
            continue
        for name, param in module.named_parameters(recurse=False):
            put(f"{path}.{name}" if path else name, param.data)
    return out


def reference_model(model: Model) -> nn.Module:
    from transformers import VoxtralRealtimeConfig, VoxtralRealtimeForConditionalGeneration

    config = VoxtralRealtimeConfig(**hf_config_dict(model))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(model.dtype)  # build directly in the compute dtype: no fp32 copy
    try:
        with torch.device(model.device):
            hf = VoxtralRealtimeForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    state = {canonical_to_hf(name): t for name, t in canonical_tensors(model).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise AsrError(f"internal error: reference weights do not line up ({missing[:3]}, {unexpected[:3]})")
    hf.tie_weights()
    return hf.eval()
