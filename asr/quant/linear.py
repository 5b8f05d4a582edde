"""QLinear: a linear layer whose weight stays GGUF-quantized in memory.

The reference path dequantizes the weight exactly on every call and runs ``F.linear``; it is
correct on CPU and CUDA for every supported type, and slow (performance.md §4: about 12x slower
than BF16 at batch 1 on an H100). ``asr/quant/fast.py`` builds the fast forms from it at load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asr.errors import WeightsError
from asr.quant.tensor import QuantizedTensor
from asr.quant.types import QUANT_TYPES

# Weights with more values than this are multiplied in row chunks, so a call never holds the
# whole dense matrix (the tied 131072 x 3072 LM head would otherwise need 1.6 GB of float32).
_MAX_DENSE_VALUES = 32 * 1024 * 1024


class QLinear(nn.Module):
    """``y = x Wᵀ + b`` with W held as packed GGUF blocks (a uint8 buffer that ``.to()`` moves)."""

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if len(qweight.shape) != 2:
            raise WeightsError(f"QLinear needs a 2-D weight, got {qweight!r}")
        self.out_features, self.in_features = qweight.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise WeightsError(f"QLinear bias has shape {tuple(bias.shape)}, expected ({self.out_features},)")
        self.qtype_id = qweight.qtype.ggml_id
        self.compute_dtype = compute_dtype
        self.register_buffer("qdata", qweight.data)  # uint8 [out, bytes_per_row], ggml block layout
        self.register_buffer("bias", None if bias is None else bias.to(compute_dtype))

    @property
    def n_packed_params(self) -> int:
        """Weights held packed (they are buffers, so ``parameters()`` does not count them)."""
        return self.out_features * self.in_features

    @property
    def qweight(self) -> QuantizedTensor:
        """The packed weight, on whatever device the module is on."""
        return QuantizedTensor(self.qdata, QUANT_TYPES[self.qtype_id], (self.out_features, self.in_features))

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The exact dense weight ``[out, in]`` (``dtype`` defaults to the compute dtype)."""
        return self.qweight.dequantize(dtype or self.compute_dtype)

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.dequantized_weight(dtype)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: index [...] -> exact rows [..., in] in the compute dtype."""
        return self.qweight.dequantize_rows(index, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., in] -> [..., out]
        return self.matmul(x.to(self.compute_dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """Reference path: dequantize (exactly) and ``F.linear``; override for fast kernels."""
        qweight = self.qweight
        bias = self.bias
        if self.out_features * self.in_features <= _MAX_DENSE_VALUES:
            return F.linear(x, qweight.dequantize(self.compute_dtype), bias)
        rows_per_chunk = max(1, _MAX_DENSE_VALUES // self.in_features)
        out = torch.empty(*x.shape[:-1], self.out_features, dtype=x.dtype, device=x.device)
        chunk = torch.empty(rows_per_chunk, self.in_features, dtype=self.compute_dtype,
                            device=self.qdata.device)
        for r0 in range(0, self.out_features, rows_per_chunk):
            r1 = min(self.out_features, r0 + rows_per_chunk)
            w = chunk[: r1 - r0]
            qweight.dequantize_rows_into(w, r0, r1)
            out[..., r0:r1] = F.linear(x, w, None if bias is None else bias[r0:r1])
        return out

    def extra_repr(self) -> str:
        qtype = QUANT_TYPES[self.qtype_id].name
        return (f"in_features={self.in_features}, out_features={self.out_features}, qtype={qtype}, "
                f"bias={self.bias is not None}, compute_dtype={self.compute_dtype}")
