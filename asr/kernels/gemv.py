"""Int8 codes times group scales (plus offsets): the GEMV behind Int8Linear (Q5_x, Q6_K, Q8_0).

``y[m, n] = sum_g scale[n, g] * (code[n, g] . x[m, g]) + offset[n, g] * sum(x[m, g])`` over the
groups g of G values, in fp32, for up to 8 input rows. One program owns BLOCK_N output rows and
walks K; the codes are read once per call whatever M is (the M <= 8 rows reuse the tile from
registers), which is what a bandwidth-bound batch-1 decode needs. Codes and scales are exact, so
the weights are the file's values (the dense reference rounds them to bf16 first).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from asr.kernels import interpreting
from asr.kernels.rounding import round_to

_TILES = ((16, 512, 4), (8, 512, 4), (32, 256, 4), (16, 1024, 8), (32, 512, 8), (64, 256, 8), (8, 1024, 4),
          (4, 1024, 4))  # BLOCK_N, BLOCK_K, warps
_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w) for bn, bk, w in _TILES]


# The interpreter has no timer to tune with: one fixed tile there.
@triton.autotune(configs=_CONFIGS[:1] if interpreting() else _CONFIGS, key=["N", "K", "M_PAD", "G", "HAS_OFFSET"])
@triton.jit
def _int8_gemv_kernel(x_ptr, w_ptr, s_ptr, o_ptr, y_ptr, M, N, K, G: tl.constexpr, M_PAD: tl.constexpr,
                      HAS_OFFSET: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    GPB: tl.constexpr = BLOCK_K // G  # groups per K block
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    row_ok = rows < N
    n_groups = K // G
    ms = tl.arange(0, M_PAD)
    acc = tl.zeros((M_PAD, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        codes = tl.load(w_ptr + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0)
        codes = tl.reshape(codes.to(tl.float32), (BLOCK_N, GPB, G))
        gs = k0 // G + tl.arange(0, GPB)
        g_mask = row_ok[:, None] & (gs < n_groups)[None, :]
        scale = tl.load(s_ptr + rows[:, None] * n_groups + gs[None, :], mask=g_mask, other=0.0)  # [BN, GPB]
        if HAS_OFFSET:
            offset = tl.load(o_ptr + rows[:, None] * n_groups + gs[None, :], mask=g_mask, other=0.0)
        for m in tl.static_range(M_PAD):
            x = tl.load(x_ptr + m * K + ks, mask=k_ok & (m < M), other=0.0).to(tl.float32)
            x = tl.reshape(x, (GPB, G))
            # Integer codes times x within a group, then the group's scale: sum_g s_g * (q_g . x_g).
            part = tl.sum(scale * tl.sum(codes * x[None, :, :], axis=2), axis=1)  # [BN]
            if HAS_OFFSET:
                part += tl.sum(offset * tl.sum(x, axis=1)[None, :], axis=1)
            acc += tl.where(ms[:, None] == m, part[None, :], 0.0)
    y = round_to(acc, y_ptr.dtype.element_ty)
    tl.store(y_ptr + ms[:, None] * N + rows[None, :], y, mask=(ms < M)[:, None] & row_ok[None, :])


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
