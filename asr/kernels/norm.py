"""Fused residual add + RMSNorm (times an optional per-channel scale), and SwiGLU's SiLU-times-up.

Both reproduce the reference's roundings in bf16/fp16: the normalised row is rounded to the
model dtype before the gain multiplies it, the product is rounded, and the ada scale multiplies
that rounded value, exactly as the chain of PyTorch ops does. Only the fp32 mean can differ in its
summation order, so results agree with the reference to the last bit almost always.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from asr import kernels
from asr.kernels.pdl import wait_for_predecessor
from asr.kernels.rounding import round_to


@triton.jit
def _rmsnorm_kernel(x_ptr, d_ptr, b_ptr, h_ptr, w_ptr, s_ptr, y_ptr, D, eps, HAS_DELTA: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_D: tl.constexpr,
                    USE_GDC: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    # Every load first: the gain, scale and bias do not depend on the row's statistics, and
    # issued after the reduction (its barrier) they would cost a second trip to memory. They are
    # weights (the ada scale is fixed per stream), so they go out before the wait as well.
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    if HAS_SCALE:
        s = tl.load(s_ptr + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs, mask=mask, other=0.0)
    wait_for_predecessor(USE_GDC)
    x = tl.load(x_ptr + row * D + offs, mask=mask, other=0.0)
    if HAS_DELTA:  # the residual add, rounded to the model dtype as ``x + (delta + bias)`` is
        delta = tl.load(d_ptr + row * D + offs, mask=mask, other=0.0)
        if HAS_BIAS:
            delta = round_to(delta.to(tl.float32) + bias.to(tl.float32), h_ptr.dtype.element_ty)
        x = round_to(x.to(tl.float32) + delta.to(tl.float32), h_ptr.dtype.element_ty)
        tl.store(h_ptr + row * D + offs, x, mask=mask)
    x = x.to(tl.float32)
    mean_sq = tl.sum(x * x, axis=0) / D
    dt: tl.constexpr = y_ptr.dtype.element_ty
    normed = round_to(x * (1.0 / tl.sqrt_rn(mean_sq + eps)), dt)
    y = round_to(w.to(tl.float32) * normed.to(tl.float32), dt)
    if HAS_SCALE:
        y = round_to(y.to(tl.float32) * s.to(tl.float32), dt)
    tl.store(y_ptr + row * D + offs, y, mask=mask)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, scale: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., D] -> weight * rmsnorm(x) (* scale), in x's dtype; weight and scale [D]."""
    return _launch(x, None, weight, eps, scale, None)[1]


def add_rmsnorm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
                scale: torch.Tensor | None = None, bias: torch.Tensor | None = None, h: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """h = x + (delta + bias), and weight * rmsnorm(h) (* scale), in one pass: x, delta [..., D].
    ``h``: a contiguous tensor like x to write the sum into (else a new one). ``delta`` None: h is
    x and nothing is written, as :func:`rmsnorm`."""
    return _launch(x, delta, weight, eps, scale, bias, h)


def _launch(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float,
            scale: torch.Tensor | None, bias: torch.Tensor | None, h_out: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    D = x.shape[-1]
    flat = x.reshape(-1, D).contiguous()
    out = torch.empty_like(flat)
    h = flat if delta is None else torch.empty_like(flat) if h_out is None else h_out.view(-1, D)
    _rmsnorm_kernel[(flat.shape[0],)](
        flat, flat if delta is None else delta.reshape(-1, D).contiguous(), weight if bias is None else bias, h,
        weight, weight if scale is None else scale, out, D, eps,
        HAS_DELTA=delta is not None, HAS_BIAS=bias is not None, HAS_SCALE=scale is not None,
        BLOCK_D=triton.next_power_of_2(D), num_warps=4 if D <= 2048 else 8, **kernels.launch_options(flat),
    )  # fmt: skip
    return h.view(x.shape), out.view(x.shape)


@triton.jit
def silu_times_up(gate, up, dt: tl.constexpr):
    """fp32 gate and up -> silu(gate) * up in ``dt``, each op rounded as ``F.silu(gate) * up`` rounds
    it. Shared with the GEMVs that take the fused w1|w3 output directly (asr/kernels/gemv.py)."""
    silu = round_to(gate / (1.0 + tl.exp(-gate)), dt)
    return round_to(silu.to(tl.float32) * up, dt)


@triton.jit
def _silu_mul_kernel(gu_ptr, y_ptr, H, BLOCK: tl.constexpr, USE_GDC: tl.constexpr):
    wait_for_predecessor(USE_GDC)
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H
    gate = tl.load(gu_ptr + row * 2 * H + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * 2 * H + H + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * H + offs, silu_times_up(gate, up, y_ptr.dtype.element_ty), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [..., 2H] (the fused w1|w3 output) -> silu(gate) * up [..., H]."""
    H = gate_up.shape[-1] // 2
    flat = gate_up.reshape(-1, 2 * H).contiguous()
    out = torch.empty(flat.shape[0], H, dtype=flat.dtype, device=flat.device)
    block = 1024
    _silu_mul_kernel[(flat.shape[0], triton.cdiv(H, block))](flat, out, H, BLOCK=block, num_warps=4,
                                                                 **kernels.launch_options(flat))
    return out.view(*gate_up.shape[:-1], H)
