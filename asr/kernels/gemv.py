"""Int8 codes times group scales (plus offsets): the GEMV behind Int8Linear (Q5_x, Q6_K, Q8_0).

``y[m, n] = sum_k x[m, k] * (scale[n, k // G] * code[n, k] + offset[n, k // G])``, in fp32, for
up to 8 input rows. One program owns BLOCK_N output rows and walks K; the codes are read once
per call whatever M is (M <= 8 rows ride along in registers), which is what a bandwidth-bound
batch-1 decode needs. Weight values are formed in fp32 from exact codes and scales, so they are
the file's values exactly (the dense reference rounds them to bf16 first).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from asr.kernels import interpreting
from asr.kernels.rounding import round_to

_TILES = ((16, 256, 4), (8, 256, 4), (32, 128, 4), (16, 512, 8), (64, 128, 8), (4, 512, 4))  # BLOCK_N, BLOCK_K, warps
_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w) for bn, bk, w in _TILES]


# The interpreter has no timer to tune with: one fixed tile there.
@triton.autotune(configs=_CONFIGS[:1] if interpreting() else _CONFIGS, key=["N", "K", "M_PAD", "G", "HAS_OFFSET"])
@triton.jit
def _int8_gemv_kernel(x_ptr, w_ptr, s_ptr, o_ptr, y_ptr, M, N, K, G: tl.constexpr, M_PAD: tl.constexpr,
                      HAS_OFFSET: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    row_ok = rows < N
    ms = tl.arange(0, M_PAD)
    m_ok = ms < M
    groups = K // G
    acc = tl.zeros((M_PAD, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        w_mask = row_ok[:, None] & k_ok[None, :]
        codes = tl.load(w_ptr + rows[:, None] * K + ks[None, :], mask=w_mask, other=0).to(tl.float32)
        g = rows[:, None] * groups + ks[None, :] // G
        w = codes * tl.load(s_ptr + g, mask=w_mask, other=0.0)  # [BN, BK]
        if HAS_OFFSET:
            w += tl.load(o_ptr + g, mask=w_mask, other=0.0)
        x = tl.load(x_ptr + ms[:, None] * K + ks[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.sum(x.to(tl.float32)[:, None, :] * w[None, :, :], axis=2)  # [M_PAD, BN]
    y = round_to(acc, y_ptr.dtype.element_ty)
    tl.store(y_ptr + ms[:, None] * N + rows[None, :], y, mask=m_ok[:, None] & row_ok[None, :])


def int8_gemv(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None,
              group: int) -> torch.Tensor:  # fmt: skip
    """x [M <= 8, K] times int8 codes [N, K] with f32 scale/offset [N, K/group] -> [M, N] in x's dtype."""
    M, K = x.shape
    N = codes.shape[0]
    m_pad = 1 << max(0, (M - 1).bit_length())
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _int8_gemv_kernel[grid](x.contiguous(), codes, scale, scale if offset is None else offset, y, M, N, K,
                            G=group, M_PAD=m_pad, HAS_OFFSET=offset is not None)  # fmt: skip
    return y
