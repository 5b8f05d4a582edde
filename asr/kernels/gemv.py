"""GEMVs for batch-1 streaming: up to 8 input rows times a dense or an int8-coded weight.

At batch 1 a linear layer's cost is its weight read, and the library kernels leave bandwidth on
the table there (cuBLAS reaches about 2.6 TB/s on the decoder's matrices at M = 1; the dense
kernel below about 2.9, measured in the README's benchmark notes). Both kernels let one program
own BLOCK_N output rows and walk K, so each weight byte is read exactly once whatever M is.

* ``dense_gemv``: bf16/fp16 weight [N, K]. Partial products stay in fp32 registers
  ([M, BLOCK_N, BLOCK_K], or reduced per tile) and are summed over K once, at the end.
* ``int8_gemv``: ``y[m, n] = sum_g scale[n, g] * (code[n, g] . x[m, g]) + offset[n, g] * sum(x[m, g])``
  over groups of G values (Q5_x, Q6_K, Q8_0 as exact int8 codes with exact group scales), so
  the weights are the file's values (the dense reference rounds them to bf16 first).

Both take ``glu=True`` for SwiGLU's down projection: the input is then the fused w1|w3 output
[gate | up], and the kernel forms silu(gate) * up while loading it, rounded exactly as the
separate kernel (asr/kernels/norm.py) rounds it, so the separate launch and its round trip
through memory go away and the product keeps its bits.

Both take ``norm=NormedInput(...)`` for a product that follows a pre-norm (q|k|v, w1|w3): x is
then the residual stream, and the input is ``gain * rmsnorm(x + (delta + bias)) (* scale)``,
formed as it loads, rounded step by step as the norm kernel rounds it; the first program also
writes the new residual ``h = x + (delta + bias)``. Each program sums the rows' squares itself
(the rows are a few KB, read from L2), so the norm's own launch goes away. The sum's order
differs from the norm kernel's, so the normalised input can differ from it in its last bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from asr import kernels
from asr.kernels import interpreting
from asr.kernels.norm import silu_times_up
from asr.kernels.pdl import wait_for_predecessor
from asr.kernels.rounding import round_to

# Bits of the NORM constexpr: the input is a pre-norm's output (1), with a residual delta to add
# first (2) and its bias (4), and a per-channel scale after the gain (8, the decoder's ada scale).
# The kernels test them as literals: compiled kernels read no global that is not a constexpr, and
# the interpreter's constexprs do not combine with ints.
NORMED, NORM_DELTA, NORM_BIAS, NORM_SCALE = 1, 2, 4, 8
_NORM_SUM_BLOCK = tl.constexpr(1024)  # columns per step of each program's sum of squares

# BLOCK_N, BLOCK_K, warps, REDUCE_EACH (sum the tile over K at every step instead of at the end).
_DENSE_TILES = ((2, 1024, 4, 0), (1, 1024, 4, 0), (4, 1024, 8, 0), (8, 256, 4, 0), (2, 2048, 8, 1), (4, 1024, 4, 1),
                (8, 512, 4, 1))  # fmt: skip
_DENSE_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "REDUCE_EACH": r}, num_warps=w)
                  for bn, bk, w, r in _DENSE_TILES]  # fmt: skip
_MAX_PARTIALS_PER_THREAD = 64
MAX_ROWS = 8
# Triton's interpreter (the CPU tests) has no timer to tune with, and runs a launch's programs one
# after another at a fixed cost each: one wide tile there. tests/test_kernels.py runs every tile
# of both lists directly, on CPU and CUDA alike.
_INTERPRETER_TILE = {"BLOCK_N": 64, "BLOCK_K": 256}
# Both autotuners keep their timings in Triton's disk cache (cache_results, keyed by the kernel's
# source, the GPU architecture, the shape and the tile list): a later process picks the same
# tiles without timing them again, which would otherwise cost every start several seconds.


def _tuned(configs: list[triton.Config], interpreter_tile: triton.Config) -> list[triton.Config]:
    """The tiles an autotuner chooses among: every tile on a GPU, the one wide tile in the
    interpreter, the first tile only under ``VOXCAP_AUTOTUNE=0``. The CUDA test suite sets that:
    it calls every tile directly (test_every_gemv_tile), and tuning each shape it meets would
    compile every tile for each, most of the suite's GPU time."""
    if interpreting():
        return [interpreter_tile]
    return configs if os.environ.get("VOXCAP_AUTOTUNE", "1") != "0" else configs[:1]


def _fits_registers(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    """Drops tiles whose fp32 partial sums would not fit in registers for this many rows."""
    m_pad = kwargs.get("M_PAD", named_args.get("M_PAD", 1))

    def partials_per_thread(c: triton.Config) -> int:
        return m_pad * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] // (32 * c.num_warps)

    fits = [c for c in configs if c.kwargs["REDUCE_EACH"] or partials_per_thread(c) <= _MAX_PARTIALS_PER_THREAD]
    return fits or configs[:1]


@triton.autotune(configs=_tuned(_DENSE_CONFIGS, triton.Config({**_INTERPRETER_TILE, "REDUCE_EACH": 1})),
                 key=["N", "K", "M_PAD", "GLU", "NORM"], prune_configs_by={"early_config_prune": _fits_registers},
                 cache_results=True)  # fmt: skip
@triton.jit
def _dense_gemv_kernel(x_ptr, w_ptr, y_ptr, d_ptr, b_ptr, g_ptr, s_ptr, h_ptr, eps, M, N, K, M_PAD: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, REDUCE_EACH: tl.constexpr, GLU: tl.constexpr,
                       NORM: tl.constexpr, USE_GDC: tl.constexpr):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    row_ok = rows < N
    ms = tl.arange(0, M_PAD)
    m_ok = ms < M
    acc = tl.zeros((M_PAD, BLOCK_N, 1 if REDUCE_EACH else BLOCK_K), tl.float32)
    # The first K step is peeled so its weight tile goes out before the wait (weights depend on
    # no earlier kernel); the loop over the rest is the plain one.
    w = _dense_tile(w_ptr, rows, row_ok, 0, K, BLOCK_K)
    wait_for_predecessor(USE_GDC)
    rstd = _norm_rstds(x_ptr, d_ptr, b_ptr, h_ptr, M, K, eps, M_PAD, NORM)[:, None]  # [M_PAD, 1]
    acc = _dense_step(acc, w, x_ptr, ms, m_ok, 0, K, BLOCK_K, REDUCE_EACH, GLU, NORM, d_ptr, b_ptr, g_ptr, s_ptr,
                      rstd)  # fmt: skip
    for k0 in range(BLOCK_K, K, BLOCK_K):
        acc = _dense_step(acc, _dense_tile(w_ptr, rows, row_ok, k0, K, BLOCK_K), x_ptr, ms, m_ok, k0, K, BLOCK_K,
                          REDUCE_EACH, GLU, NORM, d_ptr, b_ptr, g_ptr, s_ptr, rstd)  # fmt: skip
    y = round_to(tl.sum(acc, axis=2), y_ptr.dtype.element_ty)  # [M_PAD, BN]
    tl.store(y_ptr + ms[:, None] * N + rows[None, :], y, mask=m_ok[:, None] & row_ok[None, :])


@triton.jit
def _dense_tile(w_ptr, rows, row_ok, k0, K, BLOCK_K: tl.constexpr):
    """Weight rows ``rows``, columns k0 .. k0 + BLOCK_K: [BN, BK]."""
    ks = k0 + tl.arange(0, BLOCK_K)
    return tl.load(w_ptr + rows[:, None] * K + ks[None, :], mask=row_ok[:, None] & (ks < K)[None, :], other=0.0)


@triton.jit
def _residual(x_ptr, d_ptr, b_ptr, rows, ks, K, mask, NORM: tl.constexpr):
    """The residual stream after the add, h = x + (delta + bias), at ``rows`` x ``ks`` in fp32,
    rounded as the norm kernel (asr/kernels/norm.py) rounds it."""
    dt: tl.constexpr = x_ptr.dtype.element_ty
    h = tl.load(x_ptr + rows * K + ks, mask=mask, other=0.0).to(tl.float32)
    if NORM & 2:  # NORM_DELTA
        delta = tl.load(d_ptr + rows * K + ks, mask=mask, other=0.0)
        if NORM & 4:  # NORM_BIAS
            delta = round_to(delta.to(tl.float32) + tl.load(b_ptr + ks, mask=mask, other=0.0).to(tl.float32), dt)
        h = round_to(h + delta.to(tl.float32), dt).to(tl.float32)
    return h


@triton.jit
def _norm_rstds(x_ptr, d_ptr, b_ptr, h_ptr, M, K, eps, M_PAD: tl.constexpr, NORM: tl.constexpr):
    """1 / rms of each input row after the residual add, [M_PAD] (ones without NORM); the first
    program writes those rows, h, for the layers after this one."""
    ms = tl.arange(0, M_PAD)
    rstd = tl.full((M_PAD,), 1.0, tl.float32)
    if NORM:
        writes = tl.program_id(0) == 0
        for m in tl.static_range(M_PAD):
            squares = tl.zeros((_NORM_SUM_BLOCK,), tl.float32)
            for k0 in range(0, K, _NORM_SUM_BLOCK):
                ks = k0 + tl.arange(0, _NORM_SUM_BLOCK)
                ok = (ks < K) & (m < M)
                h = _residual(x_ptr, d_ptr, b_ptr, m, ks, K, ok, NORM)
                if NORM & 2:  # NORM_DELTA
                    tl.store(h_ptr + m * K + ks, h.to(h_ptr.dtype.element_ty), mask=ok & writes)
                squares += h * h
            row_rstd = 1.0 / tl.sqrt_rn(tl.sum(squares, axis=0) / K + eps)
            rstd = tl.where(ms == m, row_rstd, rstd)
    return rstd


@triton.jit
def _input(x_ptr, rows, ks, K, mask, GLU: tl.constexpr, NORM: tl.constexpr, d_ptr, b_ptr, g_ptr, s_ptr, rstd):
    """Input ``rows`` at columns ``ks`` (broadcast together) in fp32. GLU: x_ptr holds rows of 2K,
    [gate | up] (the fused w1|w3 output), and the input is silu(gate) * up, rounded as the
    separate SwiGLU kernel rounds it: the same values that kernel would have written. NORM: x_ptr
    is the residual stream and the input is gain * (h * rstd) (* scale), h the residual after the
    add, each step rounded to the model dtype as the norm kernel rounds it."""
    if NORM:
        dt: tl.constexpr = x_ptr.dtype.element_ty
        normed = round_to(_residual(x_ptr, d_ptr, b_ptr, rows, ks, K, mask, NORM) * rstd, dt)
        gain = tl.load(g_ptr + ks, mask=mask, other=0.0).to(tl.float32)
        y = round_to(gain * normed.to(tl.float32), dt)
        if NORM & 8:  # NORM_SCALE
            y = round_to(y.to(tl.float32) * tl.load(s_ptr + ks, mask=mask, other=0.0).to(tl.float32), dt)
        return y.to(tl.float32)
    if GLU:
        gate = tl.load(x_ptr + rows * 2 * K + ks, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + rows * 2 * K + K + ks, mask=mask, other=0.0).to(tl.float32)
        return silu_times_up(gate, up, x_ptr.dtype.element_ty).to(tl.float32)
    return tl.load(x_ptr + rows * K + ks, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _dense_step(acc, w, x_ptr, ms, m_ok, k0, K, BLOCK_K: tl.constexpr, REDUCE_EACH: tl.constexpr,
                GLU: tl.constexpr, NORM: tl.constexpr, d_ptr, b_ptr, g_ptr, s_ptr, rstd):  # fmt: skip
    """acc plus the products of the weight tile w [BN, BK] with columns k0.. of every input row."""
    ks = k0 + tl.arange(0, BLOCK_K)
    x = _input(x_ptr, ms[:, None], ks[None, :], K, m_ok[:, None] & (ks < K)[None, :], GLU, NORM, d_ptr, b_ptr,
               g_ptr, s_ptr, rstd)  # fmt: skip  # [M_PAD, BK]
    prod = w.to(tl.float32)[None, :, :] * x[:, None, :]  # [M_PAD, BN, BK]
    if REDUCE_EACH:
        acc += tl.sum(prod, axis=2, keep_dims=True)
    else:
        acc += prod
    return acc


@dataclass(frozen=True)
class NormedInput:
    """A GEMV input still to be formed from the residual stream x [M, K]:
    ``gain * rmsnorm(x + (delta + bias)) (* scale)``, and ``h`` [M, K] receives x + (delta + bias)
    (with no delta, x itself is h and nothing is written). gain, bias, scale: [K]."""

    gain: torch.Tensor
    eps: float
    delta: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    h: torch.Tensor | None = None

    def launch_args(self, x: torch.Tensor) -> tuple[tuple, int]:
        """The kernels' (delta, bias, gain, scale, h, eps) pointers and the NORM bits; unused
        pointers are x (never read)."""
        if self.delta is not None and (self.h is None or not self.h.is_contiguous()):
            raise ValueError("a normed input with a delta needs a contiguous h to write the residual into")
        bits = NORMED
        bits |= NORM_DELTA if self.delta is not None else 0
        bits |= NORM_BIAS if self.bias is not None else 0
        bits |= NORM_SCALE if self.scale is not None else 0

        def given(t: torch.Tensor | None) -> torch.Tensor:
            return x if t is None else t.contiguous()

        return (given(self.delta), given(self.bias), self.gain.contiguous(), given(self.scale), given(self.h),
                self.eps), bits


def _norm_args(x: torch.Tensor, norm: NormedInput | None) -> tuple[tuple, int]:
    """What the kernels take after y: (delta, bias, gain, scale, h, eps) and the NORM bits; x and
    0.0 in the slots a plain input leaves unread."""
    return norm.launch_args(x) if norm is not None else ((x, x, x, x, x, 0.0), 0)


def dense_gemv(x: torch.Tensor, weight: torch.Tensor, glu: bool = False, norm: NormedInput | None = None
               ) -> torch.Tensor:  # fmt: skip
    """x [M <= 8, K] times weight [N, K] (x's dtype) -> [M, N], fp32 accumulation.

    ``glu``: x is [M, 2K], SwiGLU's [gate | up], and the product is ``silu_mul(x) @ weight.T``
    (the same bits) without the separate kernel. ``norm``: x is the residual stream and the
    input is the pre-norm's output (:class:`NormedInput`), without the norm's own kernel.
    """
    M, K = _rows_and_k(x, glu)
    N = weight.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    x = x.contiguous()
    norm_args, norm_bits = _norm_args(x, norm)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _dense_gemv_kernel[grid](x, weight, y, *norm_args, M, N, K, M_PAD=_pad(M), GLU=glu, NORM=norm_bits,
                             **kernels.launch_options(x))  # fmt: skip
    return y


def _rows_and_k(x: torch.Tensor, glu: bool) -> tuple[int, int]:
    M, width = x.shape
    return M, width // 2 if glu else width


def _pad(m: int) -> int:
    if not 1 <= m <= MAX_ROWS:
        raise ValueError(f"the GEMV kernels take 1 to {MAX_ROWS} rows, got {m}")
    return 1 << (m - 1).bit_length()


# BLOCK_N, BLOCK_K, warps, stages.
_INT8_TILES = ((16, 512, 4, 1), (8, 512, 4, 1), (32, 256, 4, 1), (16, 1024, 8, 1), (32, 512, 8, 1), (8, 1024, 4, 1),
               (4, 1024, 4, 1), (4, 2048, 8, 1), (16, 512, 4, 3), (8, 1024, 4, 3))  # fmt: skip
_INT8_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                 for bn, bk, w, s in _INT8_TILES]  # fmt: skip


@triton.autotune(configs=_tuned(_INT8_CONFIGS, triton.Config(_INTERPRETER_TILE)),
                 key=["N", "K", "M_PAD", "G", "HAS_OFFSET", "SUPER", "GLU", "NORM"], cache_results=True)  # fmt: skip
@triton.jit
def _int8_gemv_kernel(x_ptr, w_ptr, s_ptr, d_ptr, o_ptr, y_ptr, nd_ptr, nb_ptr, ng_ptr, ns_ptr, h_ptr, eps, M, N, K,
                      G: tl.constexpr, M_PAD: tl.constexpr, HAS_OFFSET: tl.constexpr, SUPER: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GLU: tl.constexpr, NORM: tl.constexpr,
                      USE_GDC: tl.constexpr):  # fmt: skip
    # nd, nb, ng, ns: the pre-norm's delta, bias, gain and scale when NORM (see _input).
    # The codes are loaded as [BN, GPB, G] straight from memory (no reshape, which costs a trip
    # through shared memory), each group's dot product is reduced within its thread, and the
    # scaled group sums stay in registers as [M_PAD, BN, GPB] until the end: no cross-thread
    # reduction inside the K loop.
    GPB: tl.constexpr = BLOCK_K // G  # groups per K block
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    row_ok = rows < N
    n_groups = K // G
    acc = tl.zeros((M_PAD, BLOCK_N, GPB), tl.float32)
    # The first K block is peeled so its codes and scales go out before the wait (weights depend
    # on no earlier kernel); the loop over the rest is the plain one.
    codes, scale, offset = _int8_tile(w_ptr, s_ptr, d_ptr, o_ptr, rows, row_ok, 0, n_groups, K, G, GPB, HAS_OFFSET,
                                      SUPER)  # fmt: skip
    wait_for_predecessor(USE_GDC)
    rstd = _norm_rstds(x_ptr, nd_ptr, nb_ptr, h_ptr, M, K, eps, M_PAD, NORM)  # [M_PAD]
    acc = _int8_step(acc, codes, scale, offset, x_ptr, 0, n_groups, M, K, G, GPB, M_PAD, HAS_OFFSET, GLU, NORM,
                     nd_ptr, nb_ptr, ng_ptr, ns_ptr, rstd)  # fmt: skip
    for g0 in range(GPB, n_groups, GPB):
        codes, scale, offset = _int8_tile(w_ptr, s_ptr, d_ptr, o_ptr, rows, row_ok, g0, n_groups, K, G, GPB,
                                          HAS_OFFSET, SUPER)  # fmt: skip
        acc = _int8_step(acc, codes, scale, offset, x_ptr, g0, n_groups, M, K, G, GPB, M_PAD, HAS_OFFSET, GLU, NORM,
                         nd_ptr, nb_ptr, ng_ptr, ns_ptr, rstd)  # fmt: skip
    ms = tl.arange(0, M_PAD)
    y = round_to(tl.sum(acc, axis=2), y_ptr.dtype.element_ty)  # [M_PAD, BN]
    tl.store(y_ptr + ms[:, None] * N + rows[None, :], y, mask=(ms < M)[:, None] & row_ok[None, :])


@triton.jit
def _int8_tile(w_ptr, s_ptr, d_ptr, o_ptr, rows, row_ok, g0, n_groups, K, G: tl.constexpr, GPB: tl.constexpr,
               HAS_OFFSET: tl.constexpr, SUPER: tl.constexpr):  # fmt: skip
    """The weights of groups g0 .. g0 + GPB: codes [BN, GPB, G], scale and offset [BN, GPB] (fp32)."""
    gs = g0 + tl.arange(0, GPB)  # [GPB]
    g_ok = gs < n_groups
    ks = gs[:, None] * G + tl.arange(0, G)[None, :]  # [GPB, G]
    w_mask = row_ok[:, None, None] & g_ok[None, :, None]
    codes = tl.load(w_ptr + rows[:, None, None] * K + ks[None, :, :], mask=w_mask, other=0).to(tl.float32)
    s_mask = row_ok[:, None] & g_ok[None, :]
    scale = tl.load(s_ptr + rows[:, None] * n_groups + gs[None, :], mask=s_mask, other=0).to(tl.float32)
    if SUPER:  # int8 sub-scale times the block's scale, exact in fp32 (f16 x int8)
        d = tl.load(d_ptr + rows[:, None] * (n_groups // SUPER) + (gs // SUPER)[None, :], mask=s_mask, other=0.0)
        scale *= d.to(tl.float32)  # [BN, GPB]
    offset = scale
    if HAS_OFFSET:
        offset = tl.load(o_ptr + rows[:, None] * n_groups + gs[None, :], mask=s_mask, other=0.0).to(tl.float32)
    return codes, scale, offset


@triton.jit
def _int8_step(acc, codes, scale, offset, x_ptr, g0, n_groups, M, K, G: tl.constexpr, GPB: tl.constexpr,
               M_PAD: tl.constexpr, HAS_OFFSET: tl.constexpr, GLU: tl.constexpr, NORM: tl.constexpr, d_ptr, b_ptr,
               g_ptr, s_ptr, rstd):  # fmt: skip
    """acc [M_PAD, BN, GPB] plus each input row's scaled group sums over the tile's groups."""
    gs = g0 + tl.arange(0, GPB)
    g_ok = gs < n_groups
    ks = gs[:, None] * G + tl.arange(0, G)[None, :]  # [GPB, G]
    ms = tl.arange(0, M_PAD)
    for m in tl.static_range(M_PAD):
        row_rstd = tl.sum(tl.where(ms == m, rstd, 0.0), axis=0)
        x = _input(x_ptr, m, ks, K, g_ok[:, None] & (m < M), GLU, NORM, d_ptr, b_ptr, g_ptr, s_ptr,
                   row_rstd)  # fmt: skip  # [GPB, G]
        # Integer codes times x within a group, then the group's scale: s_g * (q_g . x_g).
        part = scale * tl.sum(codes * x[None, :, :], axis=2)  # [BN, GPB]
        if HAS_OFFSET:
            part += offset * tl.sum(x, axis=1)[None, :]
        acc += tl.where(ms[:, None, None] == m, part[None, :, :], 0.0)
    return acc


def int8_gemv(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None,
              group: int, block_scale: torch.Tensor | None = None, glu: bool = False,
              norm: NormedInput | None = None) -> torch.Tensor:  # fmt: skip
    """x [M <= 8, K] times int8 codes [N, K] -> [M, N] in x's dtype.

    Group g of row n is ``scale[n, g] * codes + offset[n, g]``, with scale and offset [N, K/group]
    in float32 or float16. With ``block_scale`` [N, K/block] the scale is int8 sub-scales instead,
    each multiplied by its block's scale (Q6_K). ``glu``: x is SwiGLU's [gate | up], [M, 2K];
    ``norm``: x is the residual stream before a pre-norm; both as in :func:`dense_gemv`.
    """
    M, K = _rows_and_k(x, glu)
    N = codes.shape[0]
    m_pad = _pad(M)
    super_ = 0 if block_scale is None else (K // group) // block_scale.shape[1]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    x = x.contiguous()
    norm_args, norm_bits = _norm_args(x, norm)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _int8_gemv_kernel[grid](x, codes, scale, scale if block_scale is None else block_scale,
                            scale if offset is None else offset, y, *norm_args, M, N, K,
                            G=group, M_PAD=m_pad, HAS_OFFSET=offset is not None, SUPER=super_, GLU=glu,
                            NORM=norm_bits, **kernels.launch_options(x))  # fmt: skip
    return y
