"""The random transcribe.cpp-layout GGUF writer (for benchmarks and the memory measurement)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from asr.quant import QuantizedTensor
from asr.weights.gguf_model import load_gguf
from asr.weights.gguf_random import PRESETS, transcribe_cpp_type, write_random_gguf
from asr.weights.gguf_reader import GGUFFile
from tests.gguf_fixtures import tiny_config


@pytest.mark.parametrize("preset", PRESETS)
def test_random_gguf_loads_with_the_preset_types(tmp_path, preset):
    path = tmp_path / f"random-{preset}.gguf"
    size = write_random_gguf(path, preset, tiny_config(), chunk_bytes=4096)  # many chunks per tensor
    assert size == path.stat().st_size
    checkpoint = load_gguf(path)
    checkpoint.validate()
    assert checkpoint.quant == preset.lower()
    reader = GGUFFile(path)
    for name, info in reader.tensors.items():
        assert reader.type_name(name) == transcribe_cpp_type(name, info.shape, preset)
    weight = checkpoint.tensors["layers.1.feed_forward.w2.weight"]
    if isinstance(weight, QuantizedTensor):  # the blocks are valid: gguf-py decodes them identically
        qtype = GGMLQuantizationType[weight.qtype.name]
        expected = gguf_dequantize(weight.data.numpy(), qtype)
        assert np.isfinite(expected).all()
        assert torch.equal(weight.dequantize(), torch.from_numpy(expected.astype(np.float32)))


MEASURE = """
import resource, sys
import torch
import asr
from asr.quant import QuantizedTensor
from asr.weights.gguf_model import load_gguf
tensor_bytes = sum(t.data.numel() if isinstance(t, QuantizedTensor) else t.numel() * t.element_size()
                   for t in load_gguf(sys.argv[1]).tensors.values())
model = asr.load_model(sys.argv[1], device="cpu", dtype="bfloat16", fast=False)  # the loader, not the repack
for buffer in model.net.buffers():  # touch every packed byte, as running the model would
    buffer.view(-1)[::4096].sum()
for param in model.net.parameters():
    param.view(-1)[::4096].sum()
print(tensor_bytes, model.info.weight_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_full_size_q4_k_m_load_memory(tmp_path):
    """Issue 3: peak process memory while loading stays under 1.3x the model's memory + 300 MB.

    The packed reference path (fast=False): on CPU the fast path expands the Q6_K/Q8_0 matrices
    to bf16 by design (README, Benchmarks), which this bound is not about."""
    path = tmp_path / "full-Q4_K_M.gguf"
    try:
        size = write_random_gguf(path, "Q4_K_M")
        run = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                             check=True)
    finally:
        path.unlink(missing_ok=True)  # 2.8 GB: do not leave it in pytest's kept temp dirs
    tensor_bytes, weight_bytes, peak_rss = (int(x) for x in run.stdout.split())
    assert tensor_bytes > 0.97 * size
    # The built model keeps the weights packed: its weight memory is the file's tensor bytes
    # (within 10%; norms and convs become bf16) ...
    assert abs(weight_bytes - tensor_bytes) < 0.1 * tensor_bytes, (weight_bytes, tensor_bytes)
    # ... and loading it never held much more than that.
    assert peak_rss < 1.3 * weight_bytes + 300e6, f"peak RSS {peak_rss / 1e9:.2f} GB"
    print(f"Q4_K_M: tensors {tensor_bytes / 1e9:.3f} GB, model weights {weight_bytes / 1e9:.3f} GB, "
          f"peak RSS {peak_rss / 1e9:.3f} GB")
