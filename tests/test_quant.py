"""Torch dequantizers, QuantizedTensor and QLinear against gguf-py's numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from asr.errors import UnsupportedFormat
from asr.quant import QUANT_TYPES_BY_NAME, QLinear, QuantizedTensor, quant_type
from tests.gguf_fixtures import random_quant_bytes

ALL_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]
QUANTIZED = [name for name in ALL_TYPES if not QUANT_TYPES_BY_NAME[name].is_float]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device(name)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ALL_TYPES)
def test_dequantize_blocks_matches_gguf_py_bit_for_bit(name, device):
    qtype = QUANT_TYPES_BY_NAME[name]
    rng = np.random.default_rng(1234 + qtype.ggml_id)
    rows, n_in = 7, 4 * max(qtype.block_size, 32)
    packed = random_quant_bytes(rng, GGMLQuantizationType[name], rows, n_in)  # u8 [rows, bytes_per_row]
    expected = torch.from_numpy(gguf_dequantize(packed, GGMLQuantizationType[name]).astype(np.float32))
    blocks = torch.from_numpy(packed).to(_device(device)).reshape(-1, qtype.type_size)
    got = qtype.dequantize_blocks(blocks).reshape(rows, n_in).cpu()
    assert torch.equal(_bits(got), _bits(expected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", QUANTIZED)
def test_quantized_tensor_dequantize_permute_and_rows(name, device):
    dev = _device(device)
    qtype = QUANT_TYPES_BY_NAME[name]
    rng = np.random.default_rng(99)
    rows, n_in = 12, 2 * max(qtype.block_size, 32)
    packed = random_quant_bytes(rng, GGMLQuantizationType[name], rows, n_in)
    truth = torch.from_numpy(gguf_dequantize(packed, GGMLQuantizationType[name]).astype(np.float32))
    qt = QuantizedTensor(torch.from_numpy(packed), qtype, (rows, n_in)).to(dev)
    assert qt.nbytes == packed.nbytes and qt.device.type == dev.type
    assert torch.equal(_bits(qt.dequantize().cpu()), _bits(truth))
    assert torch.equal(qt.dequantize(torch.bfloat16).cpu(), truth.to(torch.bfloat16))
    perm = torch.randperm(rows, generator=torch.Generator().manual_seed(5))
    assert torch.equal(_bits(qt.permute_rows(perm).dequantize().cpu()), _bits(truth[perm]))
    ids = torch.tensor([[3, 0], [11, 3]], device=dev)
    assert torch.equal(qt.dequantize_rows(ids).cpu(), truth[ids.cpu()])
    assert name in repr(qt)


def test_dequantize_in_chunks_is_exact(monkeypatch):
    import asr.quant.tensor as tensor_mod

    monkeypatch.setattr(tensor_mod, "_CHUNK_VALUES", 300)  # forces 1 row per chunk below
    rng = np.random.default_rng(3)
    packed = random_quant_bytes(rng, GGMLQuantizationType.Q6_K, 5, 256)
    truth = torch.from_numpy(gguf_dequantize(packed, GGMLQuantizationType.Q6_K))
    qt = QuantizedTensor(torch.from_numpy(packed), QUANT_TYPES_BY_NAME["Q6_K"], (5, 256))
    assert torch.equal(qt.dequantize(), truth)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["Q4_0", "Q8_0", "Q4_K", "Q6_K"])
def test_qlinear_equals_f_linear_on_dequantized_weight(name, device):
    dev = _device(device)
    qtype = QUANT_TYPES_BY_NAME[name]
    rng = np.random.default_rng(7)
    out_f, in_f = 24, 2 * max(qtype.block_size, 32)
    packed = random_quant_bytes(rng, GGMLQuantizationType[name], out_f, in_f)
    weight = torch.from_numpy(gguf_dequantize(packed, GGMLQuantizationType[name]).astype(np.float32))
    bias = torch.randn(out_f)
    layer = QLinear(QuantizedTensor(torch.from_numpy(packed), qtype, (out_f, in_f)), bias).to(dev)
    assert layer.qdata.device.type == dev.type and layer.qdata.dtype == torch.uint8
    x = torch.randn(3, 5, in_f, device=dev)
    assert torch.equal(layer(x), F.linear(x, weight.to(dev), bias.to(dev)))
    assert name in repr(layer)


def test_qlinear_row_chunked_path_matches(monkeypatch):
    import asr.quant.linear as linear_mod

    monkeypatch.setattr(linear_mod, "_MAX_DENSE_VALUES", 3 * 64)  # 3 rows per chunk
    rng = np.random.default_rng(8)
    packed = random_quant_bytes(rng, GGMLQuantizationType.Q8_0, 10, 64)
    weight = torch.from_numpy(gguf_dequantize(packed, GGMLQuantizationType.Q8_0))
    gen = torch.Generator().manual_seed(8)
    layer = QLinear(QuantizedTensor(torch.from_numpy(packed), QUANT_TYPES_BY_NAME["Q8_0"], (10, 64)),
                    torch.randn(10, generator=gen))
    x = torch.randn(4, 64, generator=gen)
    # not bit-identical: BLAS may block a narrower matrix differently (differences ~1e-6)
    torch.testing.assert_close(layer(x), F.linear(x, weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_qlinear_bf16_compute_dtype():
    rng = np.random.default_rng(9)
    packed = random_quant_bytes(rng, GGMLQuantizationType.Q4_K, 8, 256)
    weight = torch.from_numpy(gguf_dequantize(packed, GGMLQuantizationType.Q4_K))
    layer = QLinear(QuantizedTensor(torch.from_numpy(packed), QUANT_TYPES_BY_NAME["Q4_K"], (8, 256)),
                    None, torch.bfloat16)
    x = torch.randn(2, 256)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, F.linear(x.bfloat16(), weight.bfloat16()))


@pytest.mark.parametrize("bad", ["Q2_K", "Q3_K", "IQ4_NL", "Q8_1"])
def test_unsupported_types_name_tensor_and_file(bad):
    ggml_id = GGMLQuantizationType[bad].value
    expected = rf"unsupported quant type {bad} in tensor blk\.0 \(file x\.gguf\)"
    with pytest.raises(UnsupportedFormat, match=expected):
        quant_type(ggml_id, tensor="blk.0", file="x.gguf")
    with pytest.raises(UnsupportedFormat, match="type id 250"):
        quant_type(250, tensor="t", file="f")


@pytest.mark.parametrize(("name", "bound"), [("Q4_K", 0.12), ("Q5_K", 0.06), ("Q6_K", 0.03)])
def test_fixture_k_quant_encoders_round_trip_through_gguf_py(name, bound):
    """The test-only K-quant encoders, written from the block layouts, decode (by gguf-py) close to
    their input: an independent check that the layouts described in asr.quant.types are right."""
    from tests.gguf_fixtures import quantize_k, quantize_q6_k

    x = np.random.default_rng(4).standard_normal((6, 768)).astype(np.float32) * 0.1
    packed = quantize_q6_k(x) if name == "Q6_K" else quantize_k(x, 4 if name == "Q4_K" else 5)
    decoded = gguf_dequantize(packed, GGMLQuantizationType[name])
    assert np.abs(decoded - x).mean() / np.abs(x).mean() < bound
    blocks = torch.from_numpy(packed).reshape(-1, QUANT_TYPES_BY_NAME[name].type_size)
    ours = QUANT_TYPES_BY_NAME[name].dequantize_blocks(blocks)
    assert torch.equal(ours.reshape(6, 768), torch.from_numpy(decoded))
