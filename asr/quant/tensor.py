"""QuantizedTensor: a GGUF-quantized weight kept as its packed blocks.

The packed bytes are the file's own bytes, one row of blocks per output row, as a uint8 tensor
``[rows, bytes_per_row]``. On CPU it is a zero-copy view of the memory-mapped file; ``to(device)``
moves the bytes and keeps them packed. Keeping ggml's block layout unchanged is deliberate: every
fast path (tinygemm int4 repack for Q4_0/Q4_1/Q4_K, an int8 GEMV for Q8_0 and the K-quants;
performance.md §8) starts from exactly these bytes, and rows stay independent, so row reordering
(q/k RoPE layout) and row slicing (embedding lookup, vocabulary chunks) are exact.
"""

from __future__ import annotations

import math

import torch

from asr.errors import WeightsError
from asr.quant.types import QuantType

# Dequantize at most this many values per chunk, so the float32 temporaries of a large matrix
# (for example the 131072 x 3072 token embedding, 1.6 GB in float32) stay around 64 MB.
_CHUNK_VALUES = 16 * 1024 * 1024


class QuantizedTensor:
    """Packed GGUF blocks plus their type and logical torch-order shape ``(out, ..., in)``."""

    __slots__ = ("data", "qtype", "shape")

    def __init__(self, data: torch.Tensor, qtype: QuantType, shape: tuple[int, ...]) -> None:
        shape = tuple(int(s) for s in shape)
        if data.dtype != torch.uint8 or data.dim() != 2:
            raise WeightsError(f"QuantizedTensor needs uint8 [rows, bytes_per_row] data, got {data.dtype} "
                               f"{tuple(data.shape)}")
        if qtype.is_float:
            raise WeightsError(f"{qtype.name} is a float type; keep it as a plain torch tensor")
        rows = math.prod(shape[:-1])
        expected = (rows, qtype.row_bytes(shape[-1]))
        if tuple(data.shape) != expected:
            raise WeightsError(f"{qtype.name} tensor of shape {shape} needs packed data {expected}, "
                               f"got {tuple(data.shape)}")
        self.data = data  # uint8 [rows, bytes_per_row]
        self.qtype = qtype
        self.shape = shape  # logical torch shape; shape[-1] is the reduction (input) dimension

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes of packed data (what the weight costs in memory)."""
        return self.data.numel()

    def numel(self) -> int:
        return math.prod(self.shape)

    def to(self, device: torch.device | str) -> QuantizedTensor:
        """The same packed blocks on ``device`` (still quantized)."""
        return QuantizedTensor(self.data.to(device), self.qtype, self.shape)

    def dequantize_rows_into(self, out: torch.Tensor, start: int = 0, stop: int | None = None) -> None:
        """Write the exact dequantization of rows ``start:stop`` into ``out`` [stop-start, in].

        Works chunk by chunk in float32 on ``out``'s device, then casts to ``out``'s dtype.
        """
        stop = self.data.shape[0] if stop is None else stop
        n_in = self.shape[-1]
        rows_per_chunk = max(1, _CHUNK_VALUES // n_in)
        blocks_per_row = n_in // self.qtype.block_size
        for r0 in range(start, stop, rows_per_chunk):
            r1 = min(stop, r0 + rows_per_chunk)
            packed = self.data[r0:r1].to(out.device, non_blocking=True)  # u8 [r, bytes_per_row]
            blocks = packed.reshape((r1 - r0) * blocks_per_row, self.qtype.type_size)
            values = self.qtype.dequantize_blocks(blocks).reshape(r1 - r0, n_in)  # f32
            out[r0 - start : r1 - start].copy_(values)

    def _row_blocks(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as one block per row of the result: u8 [r * blocks_per_row, type_size]."""
        qtype = self.qtype
        return self.data[start:stop].reshape((stop - start) * (self.shape[-1] // qtype.block_size), qtype.type_size)

    def affine_rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rows ``start:stop`` as integer codes int32 [r, in] with float32 scale and offset [r, in/group]."""
        qtype, n_in, rows = self.qtype, self.shape[-1], stop - start
        codes, scale, offset = qtype.split(self._row_blocks(start, stop))
        groups = n_in // qtype.group
        return (codes.reshape(rows, n_in), scale.reshape(rows, groups),
                None if offset is None else offset.reshape(rows, groups))  # fmt: skip

    def scale_parts_rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``start:stop`` of a ``scale_parts`` type: int8 sub-scales [r, in/group] and f32 block
        scales [r, in/block_size], whose products are ``affine_rows``' scales exactly."""
        qtype, n_in, rows = self.qtype, self.shape[-1], stop - start
        sub, d = qtype.scale_parts(self._row_blocks(start, stop))
        return sub.reshape(rows, n_in // qtype.group), d.reshape(rows, n_in // qtype.block_size)

    def dequantize(self, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """The full weight as a dense tensor of ``shape`` (exact in float32, then cast to ``dtype``)."""
        device = self.device if device is None else torch.device(device)
        out = torch.empty(self.data.shape[0], self.shape[-1], dtype=dtype, device=device)
        self.dequantize_rows_into(out)
        return out.reshape(self.shape)

    def dequantize_rows(self, index: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Dense rows ``index`` (any shape of row ids) -> ``[*index.shape, in]``, e.g. an embedding lookup."""
        flat = index.reshape(-1).to(self.data.device)
        picked = QuantizedTensor(self.data.index_select(0, flat), self.qtype, (flat.numel(), self.shape[-1]))
        return picked.dequantize(dtype, device=index.device).reshape(*index.shape, self.shape[-1])

    def permute_rows(self, index: torch.Tensor) -> QuantizedTensor:
        """A copy whose row i is row ``index[i]`` of this one (exact: rows are independent blocks)."""
        if self.data.dim() != 2 or len(self.shape) != 2:
            raise WeightsError(f"permute_rows needs a 2-D weight, got shape {self.shape}")
        if index.dim() != 1 or index.numel() != self.shape[0]:
            raise WeightsError(f"permute_rows needs {self.shape[0]} row indices, got {tuple(index.shape)}")
        return QuantizedTensor(self.data.index_select(0, index.to(self.data.device)), self.qtype, self.shape)

    def __repr__(self) -> str:
        return (f"QuantizedTensor({self.qtype.name}, shape={list(self.shape)}, "
                f"nbytes={self.nbytes}, device={self.device})")
