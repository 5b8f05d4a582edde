"""Random weights of any shape and storage type, made directly on the target device.

For benchmarks and tests of the full-size model, whose real weights are not downloadable here:
random weights of the real shapes cost exactly what real ones cost. Float tensors are N(0, 0.02)
(norm gains 1, biases 0); quantized tensors are random codes with small finite scales, stored
with the per-tensor type policy of the published transcribe.cpp files (Q4_K_M: Q4_K matrices,
Q6_K embeddings, Q8_0 attention outputs). A synthetic byte-level vocabulary stands in for
tekken.json.
"""

from __future__ import annotations

import torch

from asr.config import ModelConfig
from asr.quant import QuantizedTensor
from asr.quant.types import QUANT_TYPES_BY_NAME
from asr.tokenizer import TekkenTokenizer
from asr.weights.checkpoint import Checkpoint
from asr.weights.gguf_names import canonical_to_transcribe_cpp
from asr.weights.gguf_random import _F16_FIELDS, PRESETS, transcribe_cpp_type
from asr.weights.names import expected_shapes

FLOAT_PRESETS = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
QUANT_PRESETS = {p.lower(): p for p in PRESETS if p not in ("BF16", "F16")}
QUANT_PRESETS["q4_0"] = "Q4_0"  # every matrix Q4_0, as in the voxtral-mini-realtime-rs file


def random_checkpoint(
    config: ModelConfig, quant: str = "bf16", device: torch.device | str = "cpu", seed: int = 0
) -> Checkpoint:
    """Random canonical tensors for ``config``; ``quant`` is f32/bf16/f16 or a GGUF preset name."""
    quant = quant.lower()
    if quant not in FLOAT_PRESETS and quant not in QUANT_PRESETS:
        choices = ", ".join([*FLOAT_PRESETS, *QUANT_PRESETS])
        raise ValueError(f"unknown weight type {quant!r}; use one of {choices}")
    generator = torch.Generator(device=device).manual_seed(seed)
    tensors: dict[str, object] = {}
    for name, shape in expected_shapes(config).items():
        tensors[name] = _random_tensor(name, shape, quant, torch.device(device), generator)
    vocab = config.decoder.vocab_size
    return Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer=synthetic_tokenizer(vocab),
        format="random",
        quant=quant,
        path=None,
    )


def _random_tensor(
    name: str, shape: tuple[int, ...], quant: str, device: torch.device, gen: torch.Generator
) -> object:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.float32, device=device)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.float32, device=device)
    qname = _storage_type(name, shape, quant)
    if qname in ("F32", "BF16", "F16"):
        dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}[qname]
        return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=gen)
    qtype = QUANT_TYPES_BY_NAME[qname]
    rows, n_in = shape[0], shape[-1]
    n_blocks = rows * (n_in // qtype.block_size)
    blocks = torch.randint(
        0, 256, (n_blocks, qtype.type_size), dtype=torch.uint8, device=device, generator=gen
    )
    for offset in _F16_FIELDS[qname]:  # scales: small finite float16 values
        scales = (torch.rand(n_blocks, device=device, generator=gen) * 1e-3).to(torch.float16)
        blocks[:, offset : offset + 2] = scales.view(torch.uint8).view(n_blocks, 2)
    return QuantizedTensor(blocks.view(rows, -1), qtype, shape)


def _storage_type(name: str, shape: tuple[int, ...], quant: str) -> str:
    if quant in FLOAT_PRESETS:
        return {"f32": "F32", "bf16": "BF16", "f16": "F16"}[quant]
    preset = QUANT_PRESETS[quant]
    if len(shape) < 2:
        return "F32"
    if preset == "Q4_0":
        return "Q4_0" if shape[-1] % 32 == 0 else "F32"
    if name.startswith("whisper_encoder.conv_layers."):
        return "F32"  # conv kernels are 3-D; transcribe.cpp keeps them unquantized
    return transcribe_cpp_type(canonical_to_transcribe_cpp(name), shape, preset)


def synthetic_tokenizer(vocab_size: int) -> TekkenTokenizer:
    """Distinct byte pieces for every text id: the 256 bytes, then pairs, then triples."""
    pieces: list[bytes] = []
    width = 1
    while len(pieces) < vocab_size - 1000:
        for i in range(256**width):
            pieces.append(i.to_bytes(width, "big"))
            if len(pieces) == vocab_size - 1000:
                break
        width += 1
    names = [f"<SPECIAL_{i}>" for i in range(1000)]
    for rank, name in ((1, "<s>"), (2, "</s>"), (32, "[STREAMING_PAD]"), (33, "[STREAMING_WORD]")):
        names[rank] = name
    return TekkenTokenizer(pieces, names, source="synthetic vocabulary (random model)")
