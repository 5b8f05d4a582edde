"""The fast forms of quantized weights keep the file's integer codes (asr/quant/fast.py).

Oracles: gguf-py's dequantizer for the values, and, for tinygemm's int4 layout, the affine form
``(u - 8) * s + z`` computed independently in float32 from the codes with the scale and zero
rounded to bf16 exactly as the repack stores them. These run on CPU (the CPU int4 kernel and the
int8 large-input path); tests/test_kernels.py runs the int8 GEMV and tests/test_cuda.py the CUDA
int4 kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType, dequantize

import asr.quant.fast as fast
from asr import kernels
from asr.quant import QLinear, QuantizedTensor
from asr.quant.fast import DenseLinear, Int4Linear, Int8Linear, PackedLinear, dense_form, fast_linear, onednn_packs_bf16
from asr.quant.types import QUANT_TYPES_BY_NAME
from tests.gguf_fixtures import random_quant_bytes

INT4_TYPES = ("Q4_0", "Q4_1", "Q4_K")
INT8_TYPES = ("Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0")
# Q5_K's d * sc is not a float16 value in general (nor in these random blocks): it stays float32.
SCALE_STORAGE = {"Q5_0": torch.float16, "Q5_1": torch.float16, "Q8_0": torch.float16, "Q6_K": torch.int8,
                 "Q5_K": torch.float32}  # fmt: skip


def _weight(name: str, rows: int, n_in: int, seed: int = 0) -> tuple[QuantizedTensor, torch.Tensor]:
    """Random valid blocks of type ``name`` and gguf-py's float32 values for them."""
    rng = np.random.default_rng(seed)
    qtype = GGMLQuantizationType[name]
    packed = random_quant_bytes(rng, qtype, rows, n_in)  # uint8 [rows, bytes_per_row]
    truth = torch.from_numpy(dequantize(packed, qtype).astype(np.float32)).reshape(rows, n_in)
    return QuantizedTensor(torch.from_numpy(packed), QUANT_TYPES_BY_NAME[name], (rows, n_in)), truth


def _tinygemm_values(qweight: QuantizedTensor) -> torch.Tensor:
    """What the int4 layer multiplies by: exact codes, scale and zero rounded to bf16 (float32 [N, K])."""
    codes, scale, offset = qweight.affine_rows(0, qweight.shape[0])
    shift = -qweight.qtype.code_range[0]
    zero = (8 - shift) * scale + (0 if offset is None else offset)
    s = scale.to(torch.bfloat16).float().repeat_interleave(32, dim=1)
    z = zero.to(torch.bfloat16).float().repeat_interleave(32, dim=1)
    return (codes + shift - 8).float() * s + z


@pytest.mark.parametrize("name", INT4_TYPES)
def test_int4_repack_keeps_codes_and_rounds_only_scales(name):
    qweight, truth = _weight(name, 64, 512)
    values = _tinygemm_values(qweight)
    # The stored codes are the file's: only the group scale and zero moved, by at most 2^-9 relative.
    scale_err = (values - truth).abs().max()
    assert scale_err <= 2**-8 * truth.abs().max(), scale_err
    _assert_int4_products(Int4Linear(qweight, None), values, truth, rows=3)


def _assert_int4_products(layer, values, truth, rows):
    """The layer's products: within bf16 output rounding of x times the values it holds (fp32
    accumulation), and close to the exact file values, within what bf16 scales allow."""
    x = torch.randn(rows, values.shape[1], generator=torch.Generator().manual_seed(rows)).to(torch.bfloat16)
    got = layer(x).float()
    want = x.float() @ values.T
    assert (got - want).abs().max() <= 2**-7 * want.abs().max() + 1e-3
    exact = x.float() @ truth.T
    assert (got - exact).abs().max() <= 2**-6 * exact.abs().max()


def test_int4_repack_in_row_chunks_equals_one_piece(monkeypatch):
    qweight, _ = _weight("Q4_K", 160, 256, seed=3)
    whole = Int4Linear(qweight, None)
    monkeypatch.setattr(fast, "_REPACK_ROWS", 64)
    chunked = Int4Linear(qweight, None)
    assert torch.equal(whole.weight, chunked.weight)
    assert torch.equal(whole.scales_zeros, chunked.scales_zeros)


def test_int4_bias_and_rows_lookup():
    qweight, truth = _weight("Q4_0", 32, 256, seed=5)
    bias = torch.randn(32)
    layer = Int4Linear(qweight, bias, keep_rows=True)
    x = torch.randn(2, 256).to(torch.bfloat16)
    no_bias = Int4Linear(qweight, None)
    assert torch.equal(layer(x), (no_bias(x).float() + bias.to(torch.bfloat16).float()).to(torch.bfloat16))
    index = torch.tensor([[3, 0], [31, 3]])
    assert torch.equal(layer.rows(index).float(), truth[index].to(torch.bfloat16).float())
    dense = layer.dense_weight(torch.float32)
    assert torch.equal(dense, _tinygemm_values(qweight).to(torch.bfloat16).float())


PLANE_TYPES = ("Q5_0", "Q5_1", "Q5_K", "Q8_0")  # 5..8-bit codes in groups of 32: CPU int4, two planes


def _plane_values(qweight: QuantizedTensor) -> torch.Tensor:
    """What the two-plane int4 layer multiplies by, from the codes: c = 16 h + l with l = c & 15,
    ``(l - 8) s + z_l + 16 s h`` with s and z_l = 8 s + offset rounded to bf16 (float32 [N, K])."""
    codes, scale, offset = qweight.affine_rows(0, qweight.shape[0])
    s = scale.to(torch.bfloat16).float().repeat_interleave(32, dim=1)
    z = (8 * scale + (0 if offset is None else offset)).to(torch.bfloat16).float().repeat_interleave(32, dim=1)
    low, high = codes % 16, torch.div(codes, 16, rounding_mode="floor")
    return (low - 8).float() * s + z + (16 * high).float() * s


@pytest.mark.parametrize("name", PLANE_TYPES)
def test_int4_planes_keep_codes_and_round_only_scales(name):
    qweight, truth = _weight(name, 96, 512, seed=17)
    layer = fast_linear(QLinear(qweight, None, torch.bfloat16))
    assert type(layer) is Int4Linear and layer.planes == 2
    values = _plane_values(qweight)
    if qweight.qtype.name in ("Q8_0", "Q5_0"):  # no offset: exactly the codes times the bf16 scale
        codes, scale, _ = qweight.affine_rows(0, 96)
        assert torch.equal(values, codes.float() * scale.to(torch.bfloat16).float().repeat_interleave(32, dim=1))
    assert (values - truth).abs().max() <= 2**-8 * truth.abs().max()
    assert torch.equal(layer.dense_weight(torch.float32), values.to(torch.bfloat16).float())
    _assert_int4_products(layer, values, truth, rows=4)


def test_int4_planes_bias_rows_and_cuda_refusal():
    qweight, truth = _weight("Q8_0", 64, 256, seed=19)
    bias = torch.randn(64)
    layer = Int4Linear(qweight, bias, keep_rows=True, planes=2)
    x = torch.randn(1, 256).to(torch.bfloat16)
    no_bias = Int4Linear(qweight, None, planes=2)
    assert torch.equal(layer(x), (no_bias(x).float() + bias.to(torch.bfloat16).float()).to(torch.bfloat16))
    index = torch.tensor([63, 0, 7])
    assert torch.equal(layer.rows(index).float(), truth[index].to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="CPU form"):
        Int4Linear(QuantizedTensor(qweight.data.to("meta"), qweight.qtype, qweight.shape), None, planes=2)


@pytest.mark.parametrize("name", INT8_TYPES)
def test_int8_form_is_exact(name):
    qweight, truth = _weight(name, 48, 512, seed=7)
    layer = Int8Linear(qweight, None, torch.float32)
    assert layer.codes.dtype == torch.int8
    assert torch.equal(layer.dense_weight(torch.float32), truth)  # exact: int8 codes, float32 scales
    index = torch.tensor([0, 47, 5])
    assert torch.equal(layer.rows(index), truth[index])
    x = torch.randn(20, 512)  # more rows than the GEMV takes: the expanded-rows path
    assert torch.allclose(layer(x), x @ truth.T, rtol=1e-5, atol=1e-5)
    # Scales are stored as compactly as stays exact: the file's float16 d, or Q6_K's int8
    # sub-scales with a float16 block scale (the exact dense_weight above covers their values).
    assert layer.scale.dtype == SCALE_STORAGE[name]
    assert (layer.block_scale is not None) == (name == "Q6_K")
    if kernels.interpreting():  # the Triton GEMV reads the same storage (on CUDA: test_cuda_int8_form)
        with kernels.on_cpu():
            got = layer(x[:3])
        want = x[:3] @ truth.T  # float32 both sides: only the summation order differs
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize(("name", "dtype", "kind"), [
    ("Q4_K", torch.bfloat16, Int4Linear),
    ("Q4_0", torch.bfloat16, Int4Linear),
    ("Q8_0", torch.bfloat16, Int4Linear),  # CPU: two nibble planes, 1 byte per weight (bf16: 2)
    ("Q5_K", torch.bfloat16, Int4Linear),
    # 16-value groups: no int4 group fits, so bf16, packed for oneDNN where this CPU can (AVX-512)
    ("Q6_K", torch.bfloat16, PackedLinear if onednn_packs_bf16() else DenseLinear),
    ("Q4_K", torch.float32, QLinear),  # float32 on CPU keeps the packed reference (dense would be 16 GB)
])  # fmt: skip
def test_cpu_picks_the_form_by_type_and_dtype(name, dtype, kind):
    qweight, truth = _weight(name, 32, 256, seed=9)
    layer = fast_linear(QLinear(qweight, None, dtype))
    assert type(layer) is kind
    x = torch.randn(1, 256).to(dtype)
    assert torch.allclose(layer(x).float(), x.float() @ truth.T, rtol=2e-2, atol=2e-2 * truth.abs().max())


onednn = pytest.mark.skipif(not onednn_packs_bf16(), reason="this torch or CPU packs no bf16 weights for oneDNN")


@onednn
@pytest.mark.parametrize("rows", [1, 4, 39])
def test_packed_dense_weight_gives_f_linear_products_exactly(rows):
    gen = torch.Generator().manual_seed(rows)
    weight = (torch.randn(320, 192, generator=gen) * 0.05).to(torch.bfloat16)
    bias = torch.randn(320, generator=gen).to(torch.bfloat16)
    layer = dense_form(weight, bias)
    assert type(layer) is PackedLinear and layer.packed.is_mkldnn
    x = torch.randn(2, rows, 192, generator=gen).to(torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x, weight, bias))
    assert torch.equal(layer.dense_weight(torch.float32), weight.float())
    with pytest.raises(RuntimeError, match="kept no rows"):
        layer.rows(torch.tensor([0]))


@onednn
def test_packed_tied_embedding_looks_up_the_files_rows():
    qweight, truth = _weight("Q6_K", 64, 256, seed=23)
    layer = fast_linear(QLinear(qweight, None, torch.bfloat16), keep_rows=True)
    assert type(layer) is PackedLinear
    index = torch.tensor([[5, 63], [0, 5]])
    assert torch.equal(layer.rows(index), truth[index].to(torch.bfloat16))
    x = torch.randn(1, 256).to(torch.bfloat16)
    assert torch.equal(layer(x), F.linear(x, truth.to(torch.bfloat16)))


def test_no_packing_where_the_triton_kernels_run_or_for_float32():
    weight = torch.randn(64, 32)
    assert type(dense_form(weight, None)) is DenseLinear  # float32: plain F.linear
    if kernels.interpreting():  # the CPU tests' interpreter runs the dense GEMV on a DenseLinear's rows
        with kernels.on_cpu():
            assert type(dense_form(weight.to(torch.bfloat16), None)) is DenseLinear


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", INT4_TYPES)
@pytest.mark.parametrize("M", [1, 4, 39])
def test_cuda_int4_layout(name, M):
    """tinygemm on CUDA multiplies by the same values as the CPU layout, chunked repack included."""
    qweight, _ = _weight(name, 4096 + 64, 3072, seed=11)
    layer = Int4Linear(qweight.to("cuda"), None)
    x = torch.randn(M, 3072, generator=torch.Generator().manual_seed(M)).to(torch.bfloat16)
    want = x.float() @ _tinygemm_values(qweight).T
    got = layer(x.cuda()).float().cpu()
    assert (got - want).abs().max() <= 2**-7 * want.abs().max()


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", INT8_TYPES)
@pytest.mark.parametrize("M", [1, 4, 20])
def test_cuda_int8_form(name, M):
    """Up to 8 rows through the Triton GEMV, more through expanded rows: both the exact values."""
    qweight, truth = _weight(name, 1000, 1024, seed=13)
    layer = fast_linear(QLinear(qweight.to("cuda"), None, torch.bfloat16))
    assert type(layer) is Int8Linear
    x = torch.randn(M, 1024, generator=torch.Generator().manual_seed(M)).to(torch.bfloat16)
    want = x.float() @ truth.T
    got = layer(x.cuda()).float().cpu()
    assert (got - want).abs().max() <= 2**-7 * want.abs().max()
