"""Test fixtures for the checkpoint-format layer: random quant blocks and a tiny random Voxtral
Realtime model written in every format (original directory, TrevorS GGUF, transcribe.cpp GGUF).

Truth for every quantized tensor is gguf-py's ``dequantize`` of the bytes written: gguf-py
quantizes Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 itself; K-quant tensors are random valid blocks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from asr.config import ModelConfig
from asr.weights.gguf_common import gpt2_byte_to_unicode, gpt2_token_string
from asr.weights.gguf_names import canonical_to_transcribe_cpp, interleaved_from_neox, neox_from_interleaved
from asr.weights.gguf_random import transcribe_cpp_type
from asr.weights.names import CONSOLIDATED_PREFIX, expected_shapes

T = GGMLQuantizationType

# Byte offsets of the float16 scale/min fields inside one block, per type.
_F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_quant_bytes(rng: np.random.Generator, qtype: GGMLQuantizationType, rows: int, n_in: int,
                       scale: float = 0.05) -> np.ndarray:
    """Random valid packed data ``u8 [rows, bytes_per_row]``: random codes, finite f16 scales."""
    if qtype == T.F32:
        return rng.standard_normal((rows, n_in)).astype(np.float32).view(np.uint8)
    if qtype == T.F16:
        return rng.standard_normal((rows, n_in)).astype(np.float16).view(np.uint8)
    if qtype == T.BF16:
        f32 = rng.standard_normal((rows, n_in)).astype(np.float32)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = rows * (n_in // block)
    data = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in _F16_FIELDS[qtype]:
        scales = (rng.standard_normal(n_blocks) * scale).astype(np.float16)
        data[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(rows, -1)


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def quantize_q6_k(values: np.ndarray) -> np.ndarray:
    """A plain (not llama.cpp-optimal) Q6_K encoder: f32 [rows, in] -> packed u8 [rows, in/256*210]."""
    x = values.astype(np.float32).reshape(-1, 16, 16)  # [blocks, sub-block, value]
    n = x.shape[0]
    sub_scale = np.abs(x).max(axis=-1) / 31  # [n, 16]
    d = (sub_scale.max(axis=-1) / 127).astype(np.float16).astype(np.float32)  # [n]
    safe_d = np.where(d == 0, 1, d)
    scales = np.clip(np.rint(sub_scale / safe_d[:, None]), -128, 127).astype(np.int8)
    step = d[:, None] * scales.astype(np.float32)
    q = np.clip(np.rint(x / np.where(step == 0, 1, step)[..., None]), -32, 31).astype(np.int32) + 32
    q = q.reshape(n, 2, 128)  # [n, half, position]
    low, high = q & 0x0F, q >> 4
    ql = (low[:, :, :64] | (low[:, :, 64:] << 4)).astype(np.uint8).reshape(n, 128)
    hq = high.reshape(n, 2, 4, 32)
    qh = (hq[:, :, 0] | (hq[:, :, 1] << 2) | (hq[:, :, 2] << 4) | (hq[:, :, 3] << 6)).astype(np.uint8)
    out = np.concatenate([ql, qh.reshape(n, 64), scales.view(np.uint8), _f16_bytes(d)], axis=1)
    return out.reshape(values.shape[0], -1)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """6-bit (scale, min) for 8 sub-blocks -> the 12 packed bytes of Q4_K/Q5_K."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)
    return out


def quantize_k(values: np.ndarray, bits: int) -> np.ndarray:
    """A plain Q4_K (bits=4) or Q5_K (bits=5) encoder: x ~ d*sc*q - dmin*m per 32-value sub-block."""
    levels = (1 << bits) - 1
    x = values.astype(np.float32).reshape(-1, 8, 32)
    n = x.shape[0]
    low = np.minimum(x.min(axis=-1), 0)  # [n, 8]; the offset -dmin*m can only lower values
    span = (x.max(axis=-1) - low) / levels
    d = (span.max(axis=-1) / 63).astype(np.float16).astype(np.float32)
    dmin = ((-low).max(axis=-1) / 63).astype(np.float16).astype(np.float32)
    sc = np.clip(np.rint(span / np.where(d == 0, 1, d)[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(-low / np.where(dmin == 0, 1, dmin)[:, None]), 0, 63).astype(np.uint8)
    step = d[:, None] * sc
    offset = dmin[:, None] * mn
    q = np.rint((x + offset[..., None]) / np.where(step == 0, 1, step)[..., None])
    q = np.clip(q, 0, levels).astype(np.uint8)  # [n, 8, 32]
    nib = q & 0x0F
    qs = (nib[:, 0::2] | (nib[:, 1::2] << 4)).reshape(n, 128)
    parts = [_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn)]
    if bits == 5:
        high = (q >> 4).astype(np.uint8)  # [n, 8 sub-blocks, 32]
        qh = np.zeros((n, 32), dtype=np.uint8)
        for s in range(8):
            qh |= high[:, s] << s
        parts.append(qh)
    return np.concatenate([*parts, qs], axis=1).reshape(values.shape[0], -1)


def encode(values: np.ndarray, qtype: GGMLQuantizationType, rng: np.random.Generator) -> np.ndarray:
    """Packed bytes for ``values`` (float32 [rows, in]): gguf-py's quantizer, or the plain K-quant
    encoders above (gguf-py has none); truth is always gguf-py's dequantization of the result."""
    if qtype == T.Q6_K:
        return quantize_q6_k(values)
    if qtype in (T.Q4_K, T.Q5_K):
        return quantize_k(values, 4 if qtype == T.Q4_K else 5)
    if qtype == T.F32:
        return values.astype(np.float32)
    return gguf_quantize(values.astype(np.float32), qtype)


def truth_of(packed: np.ndarray, qtype: GGMLQuantizationType) -> torch.Tensor:
    """gguf-py's float32 dequantization of packed bytes."""
    if qtype == T.F32:
        return torch.from_numpy(packed.astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(gguf_dequantize(packed, qtype), dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# The tiny model: every K-quant needs rows of 256 values, so widths are multiples of 256.
# ---------------------------------------------------------------------------------------------


def tiny_config(vocab_size: int = 1200, n_layers: int = 2) -> dict:
    """A Hugging Face-shaped config for a tiny model whose matrices all fit K-quant blocks."""
    return {
        "model_type": "voxtral_realtime",
        "audio_config": {
            "model_type": "voxtral_realtime_encoder", "hidden_size": 256, "intermediate_size": 512,
            "num_hidden_layers": n_layers, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 64,
            "num_mel_bins": 128, "sliding_window": 750, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "max_position_embeddings": 1500,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
        },
        "text_config": {
            "model_type": "voxtral_realtime_text", "vocab_size": vocab_size, "hidden_size": 256,
            "intermediate_size": 512, "num_hidden_layers": n_layers, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 64, "sliding_window": 8192, "hidden_act": "silu",
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
        },
        "downsample_factor": 4, "default_num_delay_tokens": 6, "audio_length_per_tok": 8,
        "projector_hidden_act": "gelu", "tie_word_embeddings": True,
    }


def tiny_params_json(config: dict) -> dict:
    """The params.json (Mistral's original format) describing ``config``."""
    a, t = config["audio_config"], config["text_config"]
    return {
        "dim": t["hidden_size"], "n_layers": t["num_hidden_layers"], "head_dim": t["head_dim"],
        "hidden_dim": t["intermediate_size"], "n_heads": t["num_attention_heads"],
        "n_kv_heads": t["num_key_value_heads"], "use_biases": False, "causal": True,
        "rope_theta": t["rope_parameters"]["rope_theta"], "norm_eps": t["rms_norm_eps"],
        "vocab_size": t["vocab_size"], "model_parallel": 1, "tied_embeddings": True,
        "sliding_window": t["sliding_window"], "model_max_length": t["max_position_embeddings"],
        "ada_rms_norm_t_cond": True, "ada_rms_norm_t_cond_dim": 32,
        "multimodal": {"whisper_model_args": {
            "encoder_args": {
                "audio_encoding_args": {"sampling_rate": 16000, "frame_rate": 12.5, "num_mel_bins": 128,
                                        "hop_length": 160, "window_size": 400, "global_log_mel_max": 1.5,
                                        "transcription_format": "streaming"},
                "dim": a["hidden_size"], "n_layers": a["num_hidden_layers"], "head_dim": a["head_dim"],
                "hidden_dim": a["intermediate_size"], "n_heads": a["num_attention_heads"],
                "n_kv_heads": a.get("num_key_value_heads", a["num_attention_heads"]),
                "use_biases": True, "causal": True,
                "rope_theta": a["rope_parameters"]["rope_theta"], "norm_eps": a["rms_norm_eps"],
                "sliding_window": a["sliding_window"], "vocab_size": 131072,
            },
            "downsample_args": {"downsample_factor": config["downsample_factor"]},
        }},
    }


def tiny_canonical_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights under canonical names, q/k rows in the NeoX (HF) layout."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in expected_shapes(ModelConfig.from_hf_dict(config)).items():
        values = torch.randn(shape, generator=gen) * 0.1
        if "norm" in name:
            values = 1.0 + values
        out[name] = values
    return out


@dataclass
class WrittenModel:
    path: Path  # the .gguf file or the model directory
    truth: dict[str, torch.Tensor]  # canonical name -> float32 values a loader must return
    types: dict[str, GGMLQuantizationType]  # canonical name -> stored type


def _tokens(vocab_size: int, tekken: dict | None = None) -> tuple[list[str], list[int]]:
    """gpt2 byte-level token strings, from a tekken.json's data when given (as transcribe.cpp's
    converter does), else the 256 single bytes followed by ASCII filler tokens."""
    specials = ["<unk>", "<s>", "</s>"] + [f"<SPECIAL_{i}>" for i in range(3, 1000)]
    specials[32], specials[33], specials[11] = "[STREAMING_PAD]", "[STREAMING_WORD]", "<pad>"
    table = gpt2_byte_to_unicode()
    if tekken is not None:
        for special in tekken.get("special_tokens", []):
            if special["rank"] < 1000:
                specials[special["rank"]] = special["token_str"]
        pieces = [base64.b64decode(entry["token_bytes"]) for entry in tekken["vocab"][: vocab_size - 1000]]
    else:
        pieces = [bytes([i]) if i < 256 else f"t{i}".encode() for i in range(vocab_size - 1000)]
    normal = [gpt2_token_string(piece, table) for piece in pieces]
    return specials + normal, [3] * 1000 + [1] * (vocab_size - 1000)


def write_transcribe_cpp_gguf(path: Path, config: dict, weights: dict[str, torch.Tensor],
                              preset: str = "Q4_K_M", seed: int = 0,
                              edit_metadata: Callable[[GGUFWriter], None] | None = None,
                              tekken: dict | None = None) -> WrittenModel:
    """A transcribe.cpp-style GGUF (arch voxtral_realtime, NeoX q/k, embedded vocabulary)."""
    rng = np.random.default_rng(seed)
    a, t = config["audio_config"], config["text_config"]
    writer = GGUFWriter(str(path), "voxtral_realtime")
    writer.add_name("Voxtral Mini 4B Realtime (tiny test)")
    writer.add_file_type({"BF16": 32, "F16": 1, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15}[preset])
    tokens, types = _tokens(t["vocab_size"], tekken)
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "tekken")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_array("tokenizer.ggml.merges", ["Ā ā", "t1 t2"])
    for key, value in (("bos", 1), ("eos", 2), ("unknown", 0), ("padding", 11)):
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", value)
    writer.add_uint32("stt.voxtral_realtime.streaming_pad_token_id", 32)
    p = "stt.voxtral_realtime.encoder."
    for key, value in (("n_layers", a["num_hidden_layers"]), ("d_model", a["hidden_size"]),
                       ("n_heads", a["num_attention_heads"]),
                       ("n_kv_heads", a.get("num_key_value_heads", a["num_attention_heads"])),
                       ("head_dim", a["head_dim"]), ("ffn_dim", a["intermediate_size"]),
                       ("num_mel_bins", a["num_mel_bins"]), ("max_position_embeddings", 1500),
                       ("sliding_window", a["sliding_window"])):
        writer.add_uint32(p + key, value)
    writer.add_float32(p + "rope_theta", a["rope_parameters"]["rope_theta"])
    writer.add_float32(p + "rms_norm_eps", a["rms_norm_eps"])
    writer.add_string(p + "hidden_act", "silu")
    p = "stt.voxtral_realtime.projector."
    writer.add_uint32(p + "downsample_factor", config["downsample_factor"])
    writer.add_uint32(p + "input_dim", a["hidden_size"] * config["downsample_factor"])
    writer.add_string(p + "hidden_act", "gelu")
    writer.add_uint32(p + "audio_length_per_tok", config["audio_length_per_tok"])
    p = "stt.voxtral_realtime.decoder."
    for key, value in (("n_layers", t["num_hidden_layers"]), ("hidden_size", t["hidden_size"]),
                       ("intermediate_size", t["intermediate_size"]), ("n_heads", t["num_attention_heads"]),
                       ("n_kv_heads", t["num_key_value_heads"]), ("head_dim", t["head_dim"]),
                       ("sliding_window", t["sliding_window"]),
                       ("max_position_embeddings", t["max_position_embeddings"]),
                       ("vocab_size", t["vocab_size"])):
        writer.add_uint32(p + key, value)
    writer.add_string(p + "hidden_act", "silu")
    writer.add_float32(p + "rms_norm_eps", t["rms_norm_eps"])
    writer.add_float32(p + "rope_theta", t["rope_parameters"]["rope_theta"])
    writer.add_bool(p + "tie_word_embeddings", True)
    writer.add_uint32("stt.voxtral_realtime.time.default_num_delay_tokens",
                      config["default_num_delay_tokens"])
    if edit_metadata is not None:
        edit_metadata(writer)
    writer.add_tensor("frontend.window", np.hanning(400).astype(np.float32))
    truth, stored = {}, {}
    for name, values in weights.items():
        tc_name = canonical_to_transcribe_cpp(name)
        qtype = T[transcribe_cpp_type(tc_name, tuple(values.shape), preset)]
        arr = values.numpy().astype(np.float32)
        flat = arr.reshape(-1, arr.shape[-1])
        packed = encode(flat, qtype, rng)
        truth[name] = truth_of(packed, qtype).reshape(values.shape)
        stored[name] = qtype
        if qtype in (T.F32, T.F16):
            np_dtype = np.float16 if qtype == T.F16 else np.float32
            writer.add_tensor(tc_name, packed.reshape(arr.shape).astype(np_dtype))
        else:
            writer.add_tensor(tc_name, packed.reshape(*arr.shape[:-1], -1), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return WrittenModel(path, truth, stored)


def trevors_type(name: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    """voxtral-mini-realtime-rs policy: Q4_0 for every matrix, F32 for the rest (§7.3)."""
    matrix = len(shape) == 2 and not name.endswith("norm.weight") and shape[-1] % 32 == 0
    return T.Q4_0 if matrix else T.F32


def write_trevors_gguf(path: Path, config: dict, weights: dict[str, torch.Tensor], *,
                       params_json: bool = True, tekken: bool = True, prefixed: bool = True,
                       architecture: str | None = None) -> WrittenModel:
    """A voxtral-mini-realtime-rs-style GGUF: original names, interleaved q/k, Q4_0 matrices."""
    writer = GGUFWriter(str(path), architecture or "voxtral")
    cfg = ModelConfig.from_hf_dict(config)
    truth, stored = {}, {}
    for name, values in weights.items():
        original = interleaved_from_neox(name, values, cfg)
        qtype = trevors_type(name, tuple(values.shape))
        arr = original.numpy().astype(np.float32)
        packed = encode(arr.reshape(-1, arr.shape[-1]), qtype, np.random.default_rng(0))
        # what a loader must return: the stored values, re-permuted to the NeoX layout
        stored_values = truth_of(packed, qtype).reshape(values.shape)
        truth[name] = neox_from_interleaved(name, stored_values, cfg)
        stored[name] = qtype
        file_name = (CONSOLIDATED_PREFIX + name) if prefixed and not name.startswith("layers.") \
            and name != "norm.weight" else name
        if qtype == T.F32:
            writer.add_tensor(file_name, arr)
        else:
            writer.add_tensor(file_name, packed.reshape(arr.shape[0], -1), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if params_json:
        (path.parent / "params.json").write_text(json.dumps(tiny_params_json(config)))
    if tekken:
        (path.parent / "tekken.json").write_text("{}")
    return WrittenModel(path, truth, stored)


def write_consolidated_dir(directory: Path, config: dict, weights: dict[str, torch.Tensor],
                           dtype: torch.dtype = torch.bfloat16) -> WrittenModel:
    """Mistral's original layout: consolidated.safetensors (prefixed names, interleaved q/k, BF16)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    cfg = ModelConfig.from_hf_dict(config)
    tensors, truth = {}, {}
    for name, values in weights.items():
        original = interleaved_from_neox(name, values, cfg).to(dtype).contiguous()
        top_level = name.startswith("layers.") or name == "norm.weight"
        file_name = name if top_level else CONSOLIDATED_PREFIX + name
        tensors[file_name] = original
        truth[name] = neox_from_interleaved(name, original, cfg)
    save_file(tensors, str(directory / "consolidated.safetensors"))
    (directory / "params.json").write_text(json.dumps(tiny_params_json(config)))
    (directory / "tekken.json").write_text("{}")
    return WrittenModel(directory, truth, {})


def write_all_formats(hf_dir: Path, out_dir: Path, presets: tuple[str, ...] = ("Q8_0", "Q4_K_M")
                      ) -> dict[str, WrittenModel]:
    """From a transformers tiny-model directory (tests/tiny_model.py), write the same weights as a
    Mistral directory (F32, so exact), a TrevorS GGUF (Q4_0) and transcribe.cpp GGUFs (``presets``).

    Each result's ``truth`` holds the canonical float32 weights a loader of that file must produce
    (the quantized values where the format quantizes): load those into the reference model.
    """
    from asr.weights.hf import load_hf_dir

    config = json.loads((hf_dir / "config.json").read_text())
    checkpoint = load_hf_dir(hf_dir)
    weights = {name: t.float() for name, t in checkpoint.tensors.items()}
    tekken = (hf_dir / "tekken.json").read_bytes()
    written: dict[str, WrittenModel] = {}
    mistral = write_consolidated_dir(out_dir / "mistral", config, weights, dtype=torch.float32)
    (mistral.path / "tekken.json").write_bytes(tekken)
    written["consolidated"] = mistral
    (out_dir / "trevors").mkdir(parents=True, exist_ok=True)
    written["gguf-trevors"] = write_trevors_gguf(out_dir / "trevors" / "voxtral-q4.gguf", config, weights)
    (out_dir / "trevors" / "tekken.json").write_bytes(tekken)
    for preset in presets:
        written[f"gguf-transcribe-cpp-{preset}"] = write_transcribe_cpp_gguf(
            out_dir / f"tiny-{preset}.gguf", config, weights, preset, tekken=json.loads(tekken))
    return written
