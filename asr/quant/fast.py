"""Fast forms of a GGUF-quantized linear layer, built once at load from the packed blocks.

Every quantized type is affine per group: ``w = scale * code + offset`` with integer codes
(``QuantType.split``). The fast forms keep those integer codes exactly and only re-store the
group scale and offset (performance.md §4 and §8):

* :class:`Int4Linear`: types whose codes span 16 values (Q4_0, Q4_1, Q4_K) go to PyTorch's
  tinygemm int4 layout, group 32, with ``w = (u - 8) * s + z`` where ``u = code - min_code``:
  ``s = scale`` and ``z = (8 - shift) * scale + offset``, rounded to bf16 (relative 2^-9).
  ``torch._weight_int4pack_mm`` on CUDA, ``_weight_int4pack_mm_for_cpu`` on CPU (bf16 only).
  On CPU, where no int8 group kernel exists, the 5..8-bit types with groups of 32 (Q8_0, Q5_x)
  go there too as two planes of nibbles (``Int4Linear(planes=2)``): 1 byte per weight where
  the bf16 expansion reads 2.
* :class:`Int8Linear`: the other types (Q5_x, Q6_K, Q8_0) as int8 codes with exact group
  scales and offsets (float16, float32, or int8 sub-scales of a float16 block scale); a Triton
  GEMV (asr/kernels/gemv.py) runs up to 8 rows, larger inputs (prompt prefill, long encoder
  chunks) expand a block of rows and use F.linear.
* :class:`DenseLinear`: a plain ``nn.Linear`` holding the exact dequantized weight rounded once to
  the compute dtype, where neither kernel applies (Q6_K on CPU, no Triton), and every float
  weight (BF16 checkpoints). A single input row runs the Triton dense GEMV on CUDA.
* :class:`PackedLinear`: on CPU in bf16, the same dense weight in oneDNN's blocked layout, packed
  once at load (``dense_form``): F.linear re-blocks a plain weight on every call, which at batch 1
  costs as much as the product (README, CPU benchmarks). Used only where its products are
  F.linear's bit for bit, checked when packing.

Every form answers ``dense_weight`` (for the reference bridge and tests) and ``rows`` (embedding
lookup of a tied embedding), so the decoder never needs to know which one it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from asr import kernels, prefetch
from asr.quant.linear import QLinear
from asr.quant.tensor import QuantizedTensor
from asr.quant.types import QuantType

if TYPE_CHECKING:
    from asr.layers import PendingNorm

INT4_GROUP = 32
# Rows converted per chunk: bounds the int32 temporaries (4096 x 9216 x 4 B = 151 MB). A multiple
# of 64: the CPU int4 layout interleaves blocks of 64 rows (CUDA's, tiles of 8).
_REPACK_ROWS = 4096
_DENSE_ROWS = 4096  # rows expanded per chunk on Int8Linear's large-input path
MAX_GEMV_ROWS = 8  # Int8Linear uses the Triton GEMV up to this many input rows
# Dense weights use the Triton GEMV for single rows only: at M = 4 (an encoder token) cuBLAS is
# faster on most of the encoder's shapes (H100 measurements in the README's benchmark notes).
DENSE_GEMV_ROWS = 1


def dense_gemv_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the dense Triton GEMV can multiply x by weight: kernel path, bf16/fp16, same dtype."""
    return kernels.active(x) and x.dtype == weight.dtype != torch.float32


def _glu_rows(gate_up: torch.Tensor, in_features: int, max_rows: int) -> torch.Tensor | None:
    """gate_up [..., 2 * in_features] as [M, 2 * in_features] when a GEMV with a SwiGLU input can
    take it (at most ``max_rows`` rows, on the kernel path), else None."""
    flat = gate_up.reshape(-1, gate_up.shape[-1])
    if gate_up.shape[-1] != 2 * in_features or flat.shape[0] > max_rows or not kernels.active(flat):
        return None
    return flat


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through the dense Triton GEMV when x is a single row on the kernel path."""
    n_rows = x.numel() // x.shape[-1]
    if n_rows <= DENSE_GEMV_ROWS and dense_gemv_applies(x, weight):
        from asr.kernels.gemv import dense_gemv

        y = dense_gemv(x.reshape(n_rows, -1), weight).view(*x.shape[:-1], weight.shape[0])
        return y if bias is None else y + bias
    return F.linear(x, weight, bias)


class DenseLinear(nn.Linear):
    """``nn.Linear`` with the fast-form interface (``dense_weight``, ``rows``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefetch.before_product(self)
        return dense_linear(x, self.weight, self.bias)

    def glu_product(self, gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(``silu(gate) * up`` times this weight, the bias still to add) from SwiGLU's [gate | up]
        in one dense GEMV, where that runs (one row); None otherwise (asr/layers.py SwiGLU)."""
        flat = _glu_rows(gate_up, self.in_features, DENSE_GEMV_ROWS)
        if flat is None or not dense_gemv_applies(flat, self.weight):
            return None
        from asr.kernels.gemv import dense_gemv

        prefetch.before_product(self)
        y = dense_gemv(flat, self.weight, glu=True)
        return y.view(*gate_up.shape[:-1], self.out_features), self.bias

    def normed_product(self, pending: PendingNorm) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(this weight times a pre-norm's output, the bias still to add), the norm formed inside
        the dense GEMV (one row), which also writes the residual; None where that does not run."""
        rows, norm = pending.gemv_input()
        if rows.shape[0] > DENSE_GEMV_ROWS or not dense_gemv_applies(rows, self.weight):
            return None
        from asr.kernels.gemv import dense_gemv

        prefetch.before_product(self)
        return dense_gemv(rows, self.weight, norm=norm).view(*pending.shape[:-1], self.out_features), self.bias

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        return F.embedding(index, self.weight)

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> DenseLinear:
        with torch.device("meta"):
            layer = cls(weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            layer.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
        return layer


class PackedLinear(nn.Module):
    """A bf16 weight [N, K] held in oneDNN's blocked layout on CPU (see ``dense_form``)."""

    def __init__(self, packed: torch.Tensor, bias: torch.Tensor | None, row_source: QuantizedTensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = packed.shape
        self.register_buffer("packed", packed)  # an opaque mkldnn tensor: products only
        self.register_buffer("bias", bias)
        # A tied embedding also needs rows, which the blocked layout does not give back: keep the
        # packed GGUF rows for lookups (exact values, rounded once, as the dense weight was).
        self.register_buffer("row_data", None if row_source is None else row_source.data)
        self.qtype = None if row_source is None else row_source.qtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        return _onednn_linear(flat, self.packed, self.bias).view(*x.shape[:-1], self.out_features)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.packed.to_dense().to(dtype)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        return _packed_rows(self, index)


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def dense_form(weight: torch.Tensor, bias: torch.Tensor | None, row_source: QuantizedTensor | None = None
               ) -> nn.Module:  # fmt: skip
    """The layer for a dense weight [N, K]: :class:`PackedLinear` on CPU in bf16 where this torch
    and CPU pack for oneDNN and the packed products equal F.linear's exactly (one and four rows,
    a decoder step and an encoder token, tried once here); :class:`DenseLinear` otherwise, and
    always where the Triton kernels run (CUDA, or the CPU tests' interpreter)."""
    bias = None if bias is None else bias.to(weight.dtype)
    packed = _onednn_packed(weight, bias)
    return DenseLinear.of(weight, bias) if packed is None else PackedLinear(packed, bias, row_source)


@cache
def onednn_packs_bf16() -> bool:
    """Whether this torch and CPU pack bf16 weights for oneDNN at all: its bf16 path needs AVX-512
    (BW, VL, DQ) or AVX-NE-CONVERT; an AVX2-only CPU has none, and every dense bf16 weight stays a
    plain :class:`DenseLinear` there."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 32, dtype=torch.bfloat16), 1)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


def _onednn_packed(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    cpu_bf16 = weight.device.type == "cpu" and weight.dtype == torch.bfloat16
    if not cpu_bf16 or kernels.active(weight) or not onednn_packs_bf16():
        return None
    probe = torch.randn(4, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        same = all(torch.equal(_onednn_linear(x, packed, bias), F.linear(x, weight, bias)) for x in (probe[:1], probe))
    except (RuntimeError, AttributeError, NotImplementedError):  # no such op here, or no bf16 path on this CPU
        return None
    return packed if same else None


def int4_supported(qtype_codes: tuple[int, int], shape: tuple[int, ...], device: torch.device,
                   dtype: torch.dtype) -> bool:  # fmt: skip
    """Whether tinygemm can hold this weight: 16 code values, bf16 compute, tileable shape."""
    n_out, n_in = shape
    if qtype_codes[1] - qtype_codes[0] != 15 or dtype != torch.bfloat16 or n_in % INT4_GROUP:
        return False
    if device.type == "cuda":
        return n_out % 8 == 0 and _inner_k_tiles(n_in) > 0
    return device.type == "cpu"


def int4_planes_supported(qtype: QuantType, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the CPU int4 kernel can hold this 5..8-bit weight as two nibble planes: signed codes
    within int8 (the high nibble is ``code >> 4`` in -8..7) and groups of 32 (so not Q6_K,
    whose 16-value groups have scales of their own)."""
    low, high = qtype.code_range
    return (device.type == "cpu" and dtype == torch.bfloat16 and -128 <= low and high <= 127
            and qtype.group == INT4_GROUP and shape[1] % INT4_GROUP == 0)  # fmt: skip


def _inner_k_tiles(n_in: int) -> int:
    """tinygemm's CUDA layout tiles K by 16 * inner_k_tiles (2, 4 or 8)."""
    return next((t for t in (8, 4, 2) if n_in % (16 * t) == 0), 0)


class Int4Linear(nn.Module):
    """A GGUF weight in tinygemm's layout: exact codes, bf16 group scale and zero.

    ``planes=1``: a 4-bit type, one nibble per weight. ``planes=2`` (CPU only): a 5..8-bit type
    whose signed code c is split as ``c = 16 h + l`` (l = c & 15, h = c >> 4), stored as a
    weight of 2K inputs, l's plane then h's, multiplied by ``[x | x]``: the l plane has scale s and
    zero ``8 s + offset``, the h plane (stored as h + 8) scale ``16 s`` and zero 0, so without an
    offset the layer multiplies by exactly ``c * bf16(s)``.
    """

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None, keep_rows: bool = False,
                 planes: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.planes = planes
        device = qweight.device
        if planes == 2 and device.type != "cpu":
            raise ValueError("two nibble planes are a CPU form (CUDA runs 5..8-bit codes through the int8 GEMV)")
        shift = -qweight.qtype.code_range[0]  # codes + shift = u in 0..15
        packed, scales_zeros = [], []
        for r0 in range(0, self.out_features, _REPACK_ROWS):
            r1 = min(self.out_features, r0 + _REPACK_ROWS)
            codes, scale, offset = qweight.affine_rows(r0, r1)  # int32 [r, K], f32 [r, K/32]
            if planes == 1:
                u, stored_shift = codes + shift, shift
            else:  # [r, 2K]: l as it is, then h + 8 (the h plane's zero is 0, its scale 16 s)
                u, stored_shift = torch.cat((codes & 15, (codes >> 4) + 8), dim=1), 0
            zero = (8 - stored_shift) * scale if offset is None else (8 - stored_shift) * scale + offset
            parts = torch.stack((scale, zero), dim=-1)  # [r, K/32, 2]
            if planes == 2:
                high = torch.stack((16 * scale, torch.zeros_like(scale)), dim=-1)
                parts = torch.cat((parts, high), dim=1)  # [r, 2K/32, 2]
            packed.append(_pack_int4(u, device))
            scales_zeros.append(parts)
        self.register_buffer("weight", torch.cat(packed))
        # [planes K/32, N, 2] bf16, the layout both tinygemm kernels read.
        self.register_buffer("scales_zeros", torch.cat(scales_zeros).transpose(0, 1).contiguous().to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.to(torch.bfloat16))
        # A tied embedding also needs single rows, which tinygemm's tiles do not give back: keep
        # the packed GGUF rows for lookups.
        self.register_buffer("row_data", qweight.data if keep_rows else None)
        self.qtype = qweight.qtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        y = self.unbiased(x)
        return y if self.bias is None else y + self.bias

    def unbiased(self, x: torch.Tensor) -> torch.Tensor:
        """x Wᵀ without the bias, which a fused consumer adds (asr/layers.py ``project``)."""
        return self._matmul(x.reshape(-1, self.in_features)).view(*x.shape[:-1], self.out_features)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:  # [M, in] -> [M, out] bf16
        x = x.to(torch.bfloat16).contiguous()
        if self.planes == 2:
            x = torch.cat((x, x), dim=1)  # [M, 2K]: each input meets both planes of its weight
        prefetch.before_product(self)
        if x.is_cuda:
            return torch._weight_int4pack_mm(x, self.weight, INT4_GROUP, self.scales_zeros)
        return torch._weight_int4pack_mm_for_cpu(x, self.weight, INT4_GROUP, self.scales_zeros)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight this layer multiplies by (exact codes, bf16 scale and zero), read back through
        the kernel with identity rows, rounded to bf16."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16, device=self.weight.device)
        columns = [self._matmul(eye[c : c + 256]) for c in range(0, self.in_features, 256)]
        return torch.cat(columns).T.contiguous().to(dtype)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        return _packed_rows(self, index)


def _packed_rows(layer: Int4Linear | PackedLinear, index: torch.Tensor) -> torch.Tensor:
    """Embedding lookup from the GGUF rows a layer kept (``row_data``): exact values in bf16."""
    if layer.row_data is None:
        raise RuntimeError(f"internal error: this {type(layer).__name__} kept no rows for lookups")
    table = QuantizedTensor(layer.row_data, layer.qtype, (layer.out_features, layer.in_features))
    return table.dequantize_rows(index, torch.bfloat16)


def _pack_int4(u: torch.Tensor, device: torch.device) -> torch.Tensor:
    """u: int32 [r, K] in 0..15 -> tinygemm's packed weight for ``device``."""
    if device.type == "cuda":
        pairs = ((u[:, ::2] << 4) | u[:, 1::2]).to(torch.uint8)  # even index in the high nibble
        return torch._convert_weight_to_int4pack(pairs, _inner_k_tiles(u.shape[1]))
    return torch._convert_weight_to_int4pack_for_cpu(u, 1)  # [r, K/2] uint8, rows independent


class Int8Linear(nn.Module):
    """A 5..8-bit GGUF weight as exact int8 codes with exact group scales (and offsets).

    Scales are stored as compactly as stays exact, since the GEMV reads them with the codes:
    float16 where the file's scales are float16 values (Q8_0, Q5_0, Q5_1: half of float32's
    bytes), int8 sub-scales times a float16 block scale for Q6_K (1 byte per 16 codes, not 4),
    float32 otherwise (Q5_K's d * sc).
    """

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.out_features, self.in_features = qweight.shape
        self.group = qweight.qtype.group
        self.compute_dtype = dtype
        two_level = qweight.qtype.scale_parts is not None
        codes, scales, block_scales, offsets = [], [], [], []
        for r0 in range(0, self.out_features, _REPACK_ROWS):
            r1 = min(self.out_features, r0 + _REPACK_ROWS)
            c, s, o = qweight.affine_rows(r0, r1)
            codes.append(c.to(torch.int8))
            if two_level:
                s, d = qweight.scale_parts_rows(r0, r1)  # int8 [r, K/group], f32 [r, K/block]
                block_scales.append(d.to(torch.float16))  # a float16 in the file: exact
            scales.append(s)
            offsets.append(o)
        self.register_buffer("codes", torch.cat(codes))  # int8 [N, K]
        scale, offset = torch.cat(scales), None if offsets[0] is None else torch.cat(offsets)
        # [N, K/group]: f16 or f32 scales, or int8 sub-scales when block_scale [N, K/block] is set.
        self.register_buffer("scale", scale if two_level else _f16_if_exact(scale))
        self.register_buffer("block_scale", torch.cat(block_scales) if two_level else None)
        self.register_buffer("offset", None if offset is None else _f16_if_exact(offset))  # [N, K/group]
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def _group_scales(self, pick: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """float32 scales [r, K/group] of the rows ``pick`` selects (a slice or an index)."""
        scale = pick(self.scale).float()
        if self.block_scale is not None:
            per_block = scale.shape[1] // self.block_scale.shape[1]
            scale = scale * pick(self.block_scale).float().repeat_interleave(per_block, dim=1)
        return scale

    def _values(self, pick: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """The picked rows as exact float32 values, then rounded to ``dtype``: [r, K]."""
        codes = pick(self.codes)
        n, groups = codes.shape[0], self.in_features // self.group
        values = self._group_scales(pick)[:, :, None] * codes.view(n, groups, self.group).float()
        if self.offset is not None:
            values = values + pick(self.offset).float()[:, :, None]
        return values.view(n, self.in_features).to(dtype)

    def _expand(self, r0: int, r1: int, dtype: torch.dtype) -> torch.Tensor:
        """Rows r0:r1 as exact float32 values, then rounded to ``dtype``: [r, K]."""
        return self._values(lambda t: t[r0:r1], dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        return self._forward(x, self.bias)

    def unbiased(self, x: torch.Tensor) -> torch.Tensor:
        """x Wᵀ without the bias, which a fused consumer adds (asr/layers.py ``project``)."""
        return self._forward(x, None)

    def glu_product(self, gate_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(``silu(gate) * up`` times this weight, the bias still to add) from SwiGLU's [gate | up]
        in one GEMV, where that runs (up to 8 rows); None otherwise (asr/layers.py SwiGLU)."""
        flat = _glu_rows(gate_up, self.in_features, MAX_GEMV_ROWS)
        if flat is None:
            return None
        from asr.kernels.gemv import int8_gemv

        prefetch.before_product(self)
        y = int8_gemv(flat.to(self.compute_dtype), self.codes, self.scale, self.offset, self.group, self.block_scale,
                      glu=True)  # fmt: skip
        return y.view(*gate_up.shape[:-1], self.out_features), self.bias

    def normed_product(self, pending: PendingNorm) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(this weight times a pre-norm's output, the bias still to add), the norm formed inside
        the GEMV (up to 8 rows), which also writes the residual; None where that does not run."""
        rows, norm = pending.gemv_input()
        if rows.shape[0] > MAX_GEMV_ROWS or rows.dtype != self.compute_dtype or not kernels.active(rows):
            return None
        from asr.kernels.gemv import int8_gemv

        prefetch.before_product(self)
        y = int8_gemv(rows, self.codes, self.scale, self.offset, self.group, self.block_scale, norm=norm)
        return y.view(*pending.shape[:-1], self.out_features), self.bias

    def _forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(self.compute_dtype)
        prefetch.before_product(self)
        if flat.shape[0] <= MAX_GEMV_ROWS and kernels.active(flat):
            from asr.kernels.gemv import int8_gemv

            y = int8_gemv(flat, self.codes, self.scale, self.offset, self.group, self.block_scale)
            y = y if bias is None else y + bias
            return y.view(*x.shape[:-1], self.out_features)
        y = torch.empty(flat.shape[0], self.out_features, dtype=flat.dtype, device=flat.device)
        for r0 in range(0, self.out_features, _DENSE_ROWS):
            r1 = min(self.out_features, r0 + _DENSE_ROWS)
            y[:, r0:r1] = F.linear(flat, self._expand(r0, r1, flat.dtype), None if bias is None else bias[r0:r1])
        return y.view(*x.shape[:-1], self.out_features)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self._expand(0, self.out_features, dtype)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: index [...] -> exact rows [..., in] in the compute dtype."""
        flat = index.reshape(-1)
        values = self._values(lambda t: t.index_select(0, flat), self.compute_dtype)
        return values.view(*index.shape, self.in_features)


def _f16_if_exact(values: torch.Tensor) -> torch.Tensor:
    """float32 -> float16 when every value survives the round trip (then half the bytes), else as is."""
    half = values.to(torch.float16)
    return half if torch.equal(half.float(), values) else values


def fast_linear(layer: QLinear, keep_rows: bool = False) -> nn.Module:
    """The fastest exact-code form of ``layer`` for its device and compute dtype.

    ``keep_rows``: the layer is also a tied embedding, so row lookups must stay possible.
    """
    qweight, bias, dtype = layer.qweight, layer.bias, layer.compute_dtype
    device = qweight.device
    if int4_supported(qweight.qtype.code_range, qweight.shape, device, dtype):
        return Int4Linear(qweight, bias, keep_rows)
    if device.type == "cuda" and kernels.triton_available():
        return Int8Linear(qweight, bias, dtype)
    if int4_planes_supported(qweight.qtype, qweight.shape, device, dtype):
        return Int4Linear(qweight, bias, keep_rows, planes=2)
    if device.type == "cpu" and dtype != torch.bfloat16:
        return layer  # float32 on CPU: dense copies would need 16 GB; keep the packed reference path
    return dense_form(layer.dequantized_weight(dtype), bias, qweight if keep_rows else None)
