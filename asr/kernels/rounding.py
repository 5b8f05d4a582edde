"""fp32 -> model dtype with round-to-nearest-even, the rounding every PyTorch op applies.

A plain ``.to(tl.bfloat16)`` rounds to nearest even on the GPU, but Triton's CPU interpreter
(the CPU tests' way of running these kernels) truncates. Rounding the fp32 bits ourselves gives
the same answer on both, at the cost of three integer ops in kernels that are memory-bound.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """fp32 tensor -> ``dtype`` (bf16, fp16 or fp32), rounding to nearest even."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    else:
        return x.to(dtype)
