"""GGML tensor types voxcap can read, each with a vectorized torch reference dequantizer.

Every dequantizer takes packed blocks as a uint8 tensor ``[n_blocks, type_size]`` (CPU or CUDA)
and returns float32 ``[n_blocks, block_size]`` computed with the same float32 operations, in the
same order, as gguf-py's numpy ``gguf.quants.dequantize``, so the results agree bit for bit.
(One multiply, or one multiply then one add/subtract, of float32 values: no fused multiply-add,
which eager torch never emits for separate ops.)

Block layouts (ggml ``ggml-common.h``; offsets in bytes):

* Q4_0 (32 values, 18 B): f16 d | 16 B nibbles; x = d*(q-8). Byte i: low nibble -> value i,
  high nibble -> value i+16. Q4_1 (20 B) adds an f16 min m after d: x = d*q + m.
* Q5_0 (22 B): f16 d | u32 high bits (bit j -> value j) | 16 B nibbles as Q4_0; x = d*(q-16).
  Q5_1 (24 B): f16 d | f16 m | u32 | nibbles; x = d*q + m.
* Q8_0 (34 B): f16 d | 32 x int8; x = q*d.
* Q4_K (256 values, 144 B): f16 d | f16 dmin | 12 B of packed 6-bit (scale, min) for 8 sub-blocks
  of 32 | 128 B nibbles (bytes 32g..32g+31: low nibbles = sub-block 2g, high = 2g+1);
  x = (d*sc)*q - dmin*m.
* Q5_K (176 B): as Q4_K plus 32 B of high bits before the nibbles (bit s of byte l -> value l of
  sub-block s).
* Q6_K (256 values, 210 B): 128 B low nibbles | 64 B 2-bit highs | 16 x int8 scales | f16 d;
  x = (d*scale[j//16]) * (q-32).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from asr.errors import UnsupportedFormat

QK_K = 256  # values per K-quant super-block
Affine = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # codes int32 [n, bs], scale/offset f32 [n, bs/g]


@dataclass(frozen=True)
class QuantType:
    """One GGML tensor type: its id in GGUF files, block geometry and torch decoders."""

    name: str
    ggml_id: int
    block_size: int  # values per block
    type_size: int  # bytes per block
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None  # float types: u8 [n, size] -> f32 [n, 1]
    split: Callable[[torch.Tensor], Affine] | None = None  # quantized types: blocks -> codes, scale, offset
    group: int = 0  # values sharing one scale (and offset)
    code_range: tuple[int, int] = (0, 0)  # inclusive range of the integer codes
    # Types whose group scale is d (one f16 per block) times a small signed integer per group, and
    # that have no offset: blocks -> (int8 sub-scales [n, groups per block], f32 d [n, 1]). Lets the
    # int8 GEMV read 1 byte of scale per group instead of 4 (Q6_K: 25 % of the weight's bytes).
    scale_parts: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    torch_dtype: torch.dtype | None = None  # for float types: the element dtype

    @property
    def is_float(self) -> bool:
        """F32/F16/BF16: loaders return plain torch tensors for these."""
        return self.split is None

    def row_bytes(self, n_values: int, *, tensor: str = "?", file: str = "?") -> int:
        """Bytes of one row of ``n_values`` values; the row must be a whole number of blocks."""
        if n_values % self.block_size:
            raise UnsupportedFormat(
                f"tensor {tensor} (file {file}) has rows of {n_values} values, not a multiple of the "
                f"{self.name} block size {self.block_size}; the file is corrupt or was written wrongly"
            )
        return n_values // self.block_size * self.type_size

    def dequantize_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """u8 [n, type_size] -> f32 [n, block_size], bit for bit as gguf-py."""
        if self.split is None:
            return self.decode(blocks)
        codes, scale, offset = self.split(blocks)
        n, groups = codes.shape[0], self.block_size // self.group
        values = scale.view(n, groups, 1) * codes.view(n, groups, self.group).to(torch.float32)
        if offset is not None:
            values = values + offset.view(n, groups, 1)
        return values.view(n, self.block_size)


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The little-endian float16 at byte ``start`` of every block, as float32 [n, 1]."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).to(torch.float32)


def _nibbles_32(qs: torch.Tensor) -> torch.Tensor:
    """u8 [n, 16] -> int32 [n, 32]: low nibbles are values 0..15, high nibbles values 16..31."""
    q = qs.to(torch.int32)
    return torch.cat([q & 0x0F, q >> 4], dim=1)


def _high_bits_32(qh: torch.Tensor) -> torch.Tensor:
    """u8 [n, 4] (a little-endian u32) -> int32 [n, 32]: bit j of the u32 is value j."""
    bytes_ = qh.to(torch.int32)  # [n, 4]
    shifts = torch.arange(8, device=qh.device, dtype=torch.int32)
    bits = (bytes_.unsqueeze(-1) >> shifts) & 1  # [n, 4 bytes, 8 bits]; value j = byte j//8, bit j%8
    return bits.reshape(-1, 32)


def _dq_f32(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float32)


def _dq_f16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.float16).to(torch.float32)


def _dq_bf16(blocks: torch.Tensor) -> torch.Tensor:
    return blocks.contiguous().view(torch.bfloat16).to(torch.float32)


# Every quantized type is affine per group of ``group`` values: x = scale * code (+ offset), with
# integer codes. The splitters below return those parts; dequantizing multiplies them back with
# the same float32 operations as gguf-py (a - b equals a + (-b) exactly), and the fast kernels
# (asr/quant/fast.py) take the integer codes as they are, so no value is requantized.


def _q4_0(blocks: torch.Tensor) -> Affine:
    return _nibbles_32(blocks[:, 2:18]) - 8, _f16(blocks, 0), None


def _q4_1(blocks: torch.Tensor) -> Affine:
    return _nibbles_32(blocks[:, 4:20]), _f16(blocks, 0), _f16(blocks, 2)


def _q5_0(blocks: torch.Tensor) -> Affine:
    q = _nibbles_32(blocks[:, 6:22]) | (_high_bits_32(blocks[:, 2:6]) << 4)
    return q - 16, _f16(blocks, 0), None


def _q5_1(blocks: torch.Tensor) -> Affine:
    q = _nibbles_32(blocks[:, 8:24]) | (_high_bits_32(blocks[:, 4:8]) << 4)
    return q, _f16(blocks, 0), _f16(blocks, 2)


def _q8_0(blocks: torch.Tensor) -> Affine:
    return blocks[:, 2:34].contiguous().view(torch.int8).to(torch.int32), _f16(blocks, 0), None


def _k_scales_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u8 [n, 12] packed 6-bit values -> (scales, mins), each float32 [n, 8].

    Sub-blocks 0..3: scale = byte j & 63, min = byte j+4 & 63. Sub-blocks 4..7 take their low 4
    bits from byte j+4 (scale: low nibble, min: high nibble) and their top 2 bits from the top
    bits of bytes j-4 (scale) and j (min).
    """
    p = packed.to(torch.int32)
    lo_sc, lo_m, mixed = p[:, 0:4], p[:, 4:8], p[:, 8:12]
    sc = torch.cat([lo_sc & 0x3F, (mixed & 0x0F) | ((lo_sc >> 6) << 4)], dim=1)
    mn = torch.cat([lo_m & 0x3F, (mixed >> 4) | ((lo_m >> 6) << 4)], dim=1)
    return sc.to(torch.float32), mn.to(torch.float32)


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """u8 [n, 128] -> int32 [n, 8, 32]: 32-byte group g holds sub-block 2g (low) and 2g+1 (high)."""
    q = qs.to(torch.int32).reshape(-1, 4, 1, 32)
    return torch.cat([q & 0x0F, q >> 4], dim=2).reshape(-1, 8, 32)


def _k_affine(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K sub-block scale d*sc and offset -(dmin*m): float32 [n, 8] each."""
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1]
    sc, mn = _k_scales_mins(blocks[:, 4:16])
    return d * sc, -(dmin * mn)


def _q4_k(blocks: torch.Tensor) -> Affine:
    scale, offset = _k_affine(blocks)
    return _k_nibbles(blocks[:, 16:144]).reshape(-1, QK_K), scale, offset


def _q5_k(blocks: torch.Tensor) -> Affine:
    scale, offset = _k_affine(blocks)
    qh = blocks[:, 16:48].to(torch.int32).unsqueeze(1)  # [n, 1, 32]
    shifts = torch.arange(8, device=blocks.device, dtype=torch.int32).view(1, 8, 1)
    high = (qh >> shifts) & 1  # [n, 8 sub-blocks, 32]
    return (_k_nibbles(blocks[:, 48:176]) | (high << 4)).reshape(-1, QK_K), scale, offset


def _q6_k_scale_parts(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return blocks[:, 192:208].contiguous().view(torch.int8), _f16(blocks, 208)


def _q6_k(blocks: torch.Tensor) -> Affine:
    ql = blocks[:, 0:128].to(torch.int32).reshape(-1, 2, 1, 64)
    low = torch.cat([ql & 0x0F, ql >> 4], dim=2).reshape(-1, 2, 128)  # [n, half, 128]
    qh = blocks[:, 128:192].to(torch.int32).reshape(-1, 2, 1, 32)
    shifts = torch.arange(0, 8, 2, device=blocks.device, dtype=torch.int32).view(1, 1, 4, 1)
    high = ((qh >> shifts) & 3).reshape(-1, 2, 128)
    codes = ((low | (high << 4)) - 32).reshape(-1, QK_K)
    sub, d = _q6_k_scale_parts(blocks)  # int8 [n, 16], f32 [n, 1]
    return codes, d * sub.to(torch.float32), None


_ALL = [
    QuantType("F32", 0, 1, 4, decode=_dq_f32, torch_dtype=torch.float32),
    QuantType("F16", 1, 1, 2, decode=_dq_f16, torch_dtype=torch.float16),
    QuantType("BF16", 30, 1, 2, decode=_dq_bf16, torch_dtype=torch.bfloat16),
    QuantType("Q4_0", 2, 32, 18, split=_q4_0, group=32, code_range=(-8, 7)),
    QuantType("Q4_1", 3, 32, 20, split=_q4_1, group=32, code_range=(0, 15)),
    QuantType("Q5_0", 6, 32, 22, split=_q5_0, group=32, code_range=(-16, 15)),
    QuantType("Q5_1", 7, 32, 24, split=_q5_1, group=32, code_range=(0, 31)),
    QuantType("Q8_0", 8, 32, 34, split=_q8_0, group=32, code_range=(-128, 127)),
    QuantType("Q4_K", 12, QK_K, 144, split=_q4_k, group=32, code_range=(0, 15)),
    QuantType("Q5_K", 13, QK_K, 176, split=_q5_k, group=32, code_range=(0, 31)),
    QuantType("Q6_K", 14, QK_K, 210, split=_q6_k, group=16, code_range=(-32, 31),
              scale_parts=_q6_k_scale_parts),
]

QUANT_TYPES: dict[int, QuantType] = {t.ggml_id: t for t in _ALL}
QUANT_TYPES_BY_NAME: dict[str, QuantType] = {t.name: t for t in _ALL}


def ggml_type_name(ggml_id: int) -> str:
    """A readable name for any GGML type id, known to voxcap or not."""
    if ggml_id in QUANT_TYPES:
        return QUANT_TYPES[ggml_id].name
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(ggml_id).name
    except ValueError:
        return f"type id {ggml_id}"


def quant_type(ggml_id: int, *, tensor: str = "?", file: str = "?") -> QuantType:
    """The :class:`QuantType` for a GGML type id, or ``UnsupportedFormat`` naming tensor and file."""
    found = QUANT_TYPES.get(ggml_id)
    if found is None:
        supported = ", ".join(t.name for t in _ALL)
        raise UnsupportedFormat(
            f"unsupported quant type {ggml_type_name(ggml_id)} in tensor {tensor} (file {file}); "
            f"voxcap reads {supported}: use a GGUF quantized to one of these"
        )
    return found
