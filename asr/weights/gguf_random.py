"""Write a random transcribe.cpp-layout GGUF of any size, streaming, for benchmarks and memory tests.

The file has transcribe.cpp's tensor names, metadata keys, embedded vocabulary and per-tensor
type policy (voxtral-realtime.md §7.4), with random but valid blocks (random codes, small finite
float16 scales), so loading it exercises exactly the path a published file takes. Data is
generated and written in chunks; the whole file is never held in memory (a full-size Q4_K_M file
is about 2.8 GB).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from asr.config import ModelConfig
from asr.quant.types import QUANT_TYPES_BY_NAME, QuantType
from asr.weights.gguf_common import gpt2_byte_to_unicode, published_config
from asr.weights.gguf_names import canonical_to_transcribe_cpp
from asr.weights.names import expected_shapes

PRESETS = ("BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")
_FILE_TYPES = {"BF16": 32, "F16": 1, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15}  # llama_ftype
_ALIGN = 32
# Byte offsets of float16 scale fields inside one block (set to small finite values).
_F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
               "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


def transcribe_cpp_type(name: str, shape: tuple[int, ...], preset: str) -> str:
    """The GGML type name transcribe.cpp stores tensor ``name`` in, for a file preset.

    Rows that a K-quant block (256) does not divide fall back to Q8_0, and rows that Q8_0's 32
    does not divide to F32 (only tiny test models have such widths).
    """
    chosen = _policy_type(name, shape, preset)
    if chosen in ("Q4_K", "Q5_K", "Q6_K") and shape[-1] % 256:
        chosen = "Q8_0"
    if chosen == "Q8_0" and shape[-1] % 32:
        chosen = "F32"
    return chosen


def _policy_type(name: str, shape: tuple[int, ...], preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset}; use one of {', '.join(PRESETS)}")
    if len(shape) < 2 or name.endswith(".bias") or "norm" in name or name.startswith("frontend."):
        return "F32"
    if name.startswith("enc.conv."):
        return "F16" if preset == "BF16" else "F32"
    if preset in ("BF16", "F16", "Q8_0"):
        return preset
    if name == "dec.token_embd.weight":
        return "Q6_K"
    if name.endswith("ada.linear_2.weight"):  # 32 inputs: no K-quant block fits
        return "Q8_0"
    if name.endswith(("attn.out.weight", "attn.o.weight")):
        return "Q6_K" if preset == "Q6_K" else "Q8_0"
    return {"Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K"}[preset]


class _KV:
    """GGUF metadata encoder (little-endian)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.count = 0

    @staticmethod
    def _str(value: str) -> bytes:
        raw = value.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    def add(self, key: str, kind: str, value: object) -> None:
        codes = {"u32": (4, "<I"), "f32": (6, "<f"), "bool": (7, "<?")}
        if kind == "str":
            payload = struct.pack("<I", 8) + self._str(str(value))
        elif kind == "strs":
            items = list(value)  # type: ignore[call-overload]
            payload = struct.pack("<IIQ", 9, 8, len(items)) + b"".join(self._str(s) for s in items)
        elif kind == "i32s":
            arr = np.asarray(value, dtype="<i4")
            payload = struct.pack("<IIQ", 9, 5, arr.size) + arr.tobytes()
        else:
            code, fmt = codes[kind]
            payload = struct.pack("<I", code) + struct.pack(fmt, value)
        self.parts.append(self._str(key) + payload)
        self.count += 1


def _metadata(config: dict, preset: str) -> _KV:
    a, t = config["audio_config"], config["text_config"]
    kv = _KV()
    kv.add("general.architecture", "str", "voxtral_realtime")
    kv.add("general.name", "str", "Voxtral Mini 4B Realtime (random weights)")
    kv.add("general.file_type", "u32", _FILE_TYPES[preset])
    kv.add("general.alignment", "u32", _ALIGN)
    n_special, vocab = 1000, t["vocab_size"]
    tokens = [f"<SPECIAL_{i}>" for i in range(n_special)]
    tokens[0:3], tokens[11], tokens[32], tokens[33] = ["<unk>", "<s>", "</s>"], "<pad>", "[STREAMING_PAD]", \
        "[STREAMING_WORD]"
    byte_chars = gpt2_byte_to_unicode()
    tokens += [byte_chars[i] for i in range(min(256, vocab - n_special))]
    tokens += [f"tok{i}" for i in range(vocab - len(tokens))]
    kv.add("tokenizer.ggml.model", "str", "gpt2")
    kv.add("tokenizer.ggml.pre", "str", "tekken")
    kv.add("tokenizer.ggml.tokens", "strs", tokens)
    kv.add("tokenizer.ggml.token_type", "i32s", [3] * n_special + [1] * (vocab - n_special))
    for key, value in (("bos", 1), ("eos", 2), ("unknown", 0), ("padding", 11)):
        kv.add(f"tokenizer.ggml.{key}_token_id", "u32", value)
    m = "stt.voxtral_realtime."
    kv.add(m + "streaming_pad_token_id", "u32", 32)
    for key, value in (("n_layers", a["num_hidden_layers"]), ("d_model", a["hidden_size"]),
                       ("n_heads", a["num_attention_heads"]),
                       ("n_kv_heads", a.get("num_key_value_heads", a["num_attention_heads"])),
                       ("head_dim", a["head_dim"]), ("ffn_dim", a["intermediate_size"]),
                       ("num_mel_bins", a["num_mel_bins"]), ("sliding_window", a["sliding_window"]),
                       ("max_position_embeddings", a["max_position_embeddings"])):
        kv.add(m + "encoder." + key, "u32", value)
    kv.add(m + "encoder.rope_theta", "f32", a["rope_parameters"]["rope_theta"])
    kv.add(m + "encoder.rms_norm_eps", "f32", a["rms_norm_eps"])
    kv.add(m + "encoder.hidden_act", "str", "silu")
    kv.add(m + "projector.downsample_factor", "u32", config["downsample_factor"])
    kv.add(m + "projector.input_dim", "u32", a["hidden_size"] * config["downsample_factor"])
    kv.add(m + "projector.hidden_act", "str", "gelu")
    kv.add(m + "projector.audio_length_per_tok", "u32", config["audio_length_per_tok"])
    for key, value in (("n_layers", t["num_hidden_layers"]), ("hidden_size", t["hidden_size"]),
                       ("intermediate_size", t["intermediate_size"]), ("n_heads", t["num_attention_heads"]),
                       ("n_kv_heads", t["num_key_value_heads"]), ("head_dim", t["head_dim"]),
                       ("sliding_window", t["sliding_window"]), ("vocab_size", vocab),
                       ("max_position_embeddings", t["max_position_embeddings"])):
        kv.add(m + "decoder." + key, "u32", value)
    kv.add(m + "decoder.rope_theta", "f32", t["rope_parameters"]["rope_theta"])
    kv.add(m + "decoder.rms_norm_eps", "f32", t["rms_norm_eps"])
    kv.add(m + "decoder.hidden_act", "str", "silu")
    kv.add(m + "decoder.tie_word_embeddings", "bool", True)
    kv.add(m + "time.default_num_delay_tokens", "u32", config["default_num_delay_tokens"])
    kv.add(m + "time.ada_hidden", "u32", 32)
    return kv


def _random_rows(rng: np.random.Generator, qtype: QuantType, rows: int, n_in: int) -> bytes:
    """Packed random data for ``rows`` rows: floats ~N(0, 0.02) (norms ~1), or valid quant blocks."""
    if qtype.is_float:
        values = rng.standard_normal((rows, n_in), dtype=np.float32) * np.float32(0.02)
        if qtype.name == "F16":
            return values.astype(np.float16).tobytes()
        if qtype.name == "BF16":
            return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        return values.tobytes()
    n_blocks = rows * (n_in // qtype.block_size)
    blocks = np.frombuffer(bytearray(rng.bytes(n_blocks * qtype.type_size)), dtype=np.uint8)
    blocks = blocks.reshape(n_blocks, qtype.type_size)
    for offset in _F16_FIELDS[qtype.name]:
        scales = (rng.random(n_blocks, dtype=np.float32) * np.float32(1e-3)).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return blocks.tobytes()


def _tensor_plan(config: dict, preset: str) -> list[tuple[str, tuple[int, ...], QuantType]]:
    cfg = ModelConfig.from_hf_dict(config, source="random GGUF config")
    plan = [("frontend.mel_filterbank", (config["audio_config"]["num_mel_bins"], 201)),
            ("frontend.window", (400,)),
            ("dec.time_embed.inv_freq", (config["text_config"]["hidden_size"] // 2,))]
    plan += [(canonical_to_transcribe_cpp(name), shape) for name, shape in expected_shapes(cfg).items()]
    return [(name, shape, QUANT_TYPES_BY_NAME[transcribe_cpp_type(name, shape, preset)])
            for name, shape in plan]


def write_random_gguf(path: str | Path, preset: str = "Q4_K_M", config: dict | None = None, seed: int = 0,
                      chunk_bytes: int = 64 << 20) -> int:
    """Write a random transcribe.cpp-layout GGUF (published shapes unless ``config``); returns its size."""
    config = config or published_config()
    plan = _tensor_plan(config, preset)
    kv = _metadata(config, preset)
    infos, offset = [], 0
    for name, shape, qtype in plan:
        nbytes = qtype.row_bytes(shape[-1], tensor=name) * math.prod(shape[:-1])
        raw_name = name.encode()
        ne = list(reversed(shape))
        dims = struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, qtype.ggml_id, offset)
        infos.append(struct.pack("<Q", len(raw_name)) + raw_name + dims)
        offset += -(-nbytes // _ALIGN) * _ALIGN
    rng = np.random.default_rng(seed)
    with open(path, "wb") as out:
        out.write(b"GGUF" + struct.pack("<IQQ", 3, len(plan), kv.count))
        out.write(b"".join(kv.parts))
        out.write(b"".join(infos))
        _pad(out)
        for _name, shape, qtype in plan:
            _write_tensor(out, rng, qtype, shape, chunk_bytes)
            _pad(out)
        return out.tell()


def _pad(out: BinaryIO) -> None:
    out.write(b"\0" * (-out.tell() % _ALIGN))


def _write_tensor(out: BinaryIO, rng: np.random.Generator, qtype: QuantType, shape: tuple[int, ...],
                  chunk_bytes: int) -> None:
    n_in = shape[-1]
    rows = math.prod(shape[:-1])
    row_bytes = qtype.row_bytes(n_in)
    per_chunk = max(1, chunk_bytes // row_bytes)
    for r0 in range(0, rows, per_chunk):
        out.write(_random_rows(rng, qtype, min(per_chunk, rows - r0), n_in))
