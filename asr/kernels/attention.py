"""Split-KV attention over a ring-buffer cache, with RoPE and the ring write of the new keys.

``attention`` takes the fused q|k|v projection of T new positions. Each program rotates its
query rows on load (in the reference's bf16 rounding order: x*cos, rot*sin, their sum, each
rounded), and each program of the split that holds a new position's ring slot
(``position % slots``) rotates that key and writes it, with its value, before reading the
split. No program waits for another's write: a slot is read only by the programs of its split,
and each of those wrote it itself (with several blocks of query rows, in a prefill, each block's
program writes the same bytes). So RoPE and the ring write need no launch of their own.

The attention itself is flash-decoding: the ring's slots are cut into splits of ``SPLIT`` keys,
one program per (KV head, block of query rows, split) keeps an online softmax over its keys, and
a second kernel merges the splits. At batch 1 a one-query decode step has only 8 KV heads;
SDPA's flash kernel runs one block per head and uses 8 of an H100's 132 SMs (performance.md
§3), here every split is a block. Splits past the filled part of the ring exit at once, so a
stream that has used 2048 positions pays for 2048 keys whatever the window. All G = H/Hkv query
heads of a KV head, for all T positions, are the rows of one tile, so each key is read once per
step.

A key in slot j is visible to the query at position p when ``p - W < slot_pos[j] <= p``; empty
slots hold -1. ``slot_pos`` already names the new positions' slots for this forward
(write-first, see asr/cache.py).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from asr import kernels
from asr.kernels.pdl import wait_for_predecessor
from asr.kernels.rounding import round_to

# Per layer, in a CUDA graph on an H100 (README, "Attention per layer"): the encoder's full ring
# (1024 slots, 4 positions, 32 heads) 18.4 us in one pass per head, 6.4 us in splits of 256 keys
# with 128-key steps; the decoder at 2048 positions 10.7 -> 8.0 us, at 8192 12.7 -> 14.5 us.
SPLIT = 256  # keys per split
BLOCK_N = 128  # keys per inner step
BLOCK_R = 16  # query rows per program (tl.dot needs at least 16)
BLOCK_T = 16  # new positions per step of the ring write


@triton.jit
def _rotated(qkv_ptr, bias_ptr, cos_ptr, sin_ptr, t, col, ok, d, D: tl.constexpr, WIDTH: tl.constexpr,
             HAS_BIAS: tl.constexpr, dt: tl.constexpr):  # fmt: skip
    """Rows of the projection, plus its bias, rotated: t, col, ok [R] (position index, first column
    of the head, valid) -> [R, D] in dt, rounded as the reference's ``x*cos + rot(x)*sin`` is."""
    half: tl.constexpr = D // 2
    partner_d = (d + half) % D
    src = qkv_ptr + (t * WIDTH + col)[:, None]
    x = tl.load(src + d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    partner = tl.load(src + partner_d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    if HAS_BIAS:  # the projection's bias, rounded as ``qkv + bias`` is
        x = round_to(x + tl.load(bias_ptr + col[:, None] + d[None, :]).to(tl.float32), dt).to(tl.float32)
        partner_bias = tl.load(bias_ptr + col[:, None] + partner_d[None, :]).to(tl.float32)
        partner = round_to(partner + partner_bias, dt).to(tl.float32)
    rotated = tl.where(d[None, :] < half, -partner, partner)
    cos = tl.load(cos_ptr + t[:, None] * D + d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + t[:, None] * D + d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
    a = round_to(x * cos, dt).to(tl.float32)
    b = round_to(rotated * sin, dt).to(tl.float32)
    return round_to(a + b, dt)


@triton.jit
def _attention_split_kernel(qkv_ptr, bias_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, slot_pos_ptr, pos_ptr, m_ptr, l_ptr,
                            acc_ptr, o_ptr, T, S, window, scale, NS,
                            H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
                            HAS_BIAS: tl.constexpr, EXACT_DOT: tl.constexpr, FINAL: tl.constexpr,
                            USE_GDC: tl.constexpr):  # fmt: skip
    wait_for_predecessor(USE_GDC)  # no weights here: everything read was written this step
    kv = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # row r = (position r // G, head r % G)
    split = tl.program_id(2)
    G: tl.constexpr = H // HKV
    WIDTH: tl.constexpr = (H + 2 * HKV) * D
    dt: tl.constexpr = k_ptr.dtype.element_ty
    R = T * G
    row_ok = rows < R
    t = rows // G
    head = kv * G + rows % G
    d = tl.arange(0, D)
    start = split * SPLIT
    # The queries' loads go out first: they do not depend on the ring write, so their latency
    # overlaps it instead of adding to the chain (the barrier below keeps loads from moving up).
    q = _rotated(qkv_ptr, bias_ptr, cos_ptr, sin_ptr, t, head * D, row_ok, d, D, WIDTH, HAS_BIAS, dt)  # [BR, D]
    q_pos = tl.load(pos_ptr + t, mask=row_ok, other=0)  # [BR]
    filled = tl.minimum(tl.load(pos_ptr + T - 1) + 1, S)  # slots 0..filled-1 have ever been written
    # The new positions' keys (rotated) and values go into their ring slots first, each written by
    # the programs of the split that holds the slot: those are the only ones that read it, so no
    # other program waits for the write, and RoPE needs no launch of its own.
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        slot = tl.load(pos_ptr + ts, mask=ts < T, other=0) % S
        own = (ts < T) & (slot >= start) & (slot < start + SPLIT)
        at = (kv * S + slot)[:, None] * D + d[None, :]
        k_col = (H + kv) * D + 0 * ts  # [BT]: every row reads key head kv
        k_new = _rotated(qkv_ptr, bias_ptr, cos_ptr, sin_ptr, ts, k_col, own, d, D, WIDTH, HAS_BIAS, dt)
        tl.store(k_ptr + at, k_new, mask=own[:, None])
        v_col = (H + HKV + kv) * D
        v_new = tl.load(qkv_ptr + (ts * WIDTH + v_col)[:, None] + d[None, :], mask=own[:, None], other=0.0)
        if HAS_BIAS:
            v_bias = tl.load(bias_ptr + v_col + d).to(tl.float32)
            v_new = round_to(v_new.to(tl.float32) + v_bias[None, :], dt)
        tl.store(v_ptr + at, v_new, mask=own[:, None])
    tl.debug_barrier()  # this program's threads read what the others just wrote
    stop = tl.minimum(start + SPLIT, filled)
    m_i = tl.full((BLOCK_R,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_R,), tl.float32)
    acc = tl.zeros((BLOCK_R, D), tl.float32)
    for n0 in range(start, stop, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < stop
        key_pos = tl.load(slot_pos_ptr + n, mask=n_ok, other=-1)  # [BN]
        k = tl.load(k_ptr + (kv * S + n)[:, None] * D + d[None, :], mask=n_ok[:, None], other=0.0)  # [BN, D]
        if EXACT_DOT:
            s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee") * scale
        else:
            s = tl.dot(q, tl.trans(k)) * scale  # [BR, BN] fp32
        visible = ((key_pos[None, :] >= 0) & (key_pos[None, :] <= q_pos[:, None])
                   & (key_pos[None, :] > q_pos[:, None] - window))  # fmt: skip
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        v = tl.load(v_ptr + (kv * S + n)[:, None] * D + d[None, :], mask=n_ok[:, None], other=0.0)
        if EXACT_DOT:
            pv = tl.dot(round_to(p, v.dtype).to(tl.float32), v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new
    if FINAL:  # one split covers the ring: normalise and write the output, no merge pass
        out = acc / l_i[:, None]
        o_dt: tl.constexpr = o_ptr.dtype.element_ty
        tl.store(o_ptr + (t * H + head)[:, None] * D + d[None, :], round_to(out, o_dt), mask=row_ok[:, None])
    else:
        out = (kv * R + rows) * NS + split  # partials [Hkv, R, NS]
        tl.store(m_ptr + out, m_i, mask=row_ok)
        tl.store(l_ptr + out, l_i, mask=row_ok)
        tl.store(acc_ptr + out[:, None] * D + d[None, :], acc, mask=row_ok[:, None])


@triton.jit
def _attention_merge_kernel(m_ptr, l_ptr, acc_ptr, pos_ptr, o_ptr, T, S, NS,
                            H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr,
                            NS_BLOCK: tl.constexpr, USE_GDC: tl.constexpr):  # fmt: skip
    wait_for_predecessor(USE_GDC)
    kv = tl.program_id(0)
    row = tl.program_id(1)
    R = T * G
    filled = tl.minimum(tl.load(pos_ptr + T - 1) + 1, S)
    used = (filled + SPLIT - 1) // SPLIT  # splits past the filled slots wrote nothing
    sp = tl.arange(0, NS_BLOCK)
    ok = sp < used
    base = (kv * R + row) * NS
    m = tl.load(m_ptr + base + sp, mask=ok, other=float("-inf"))
    l_part = tl.load(l_ptr + base + sp, mask=ok, other=0.0)
    m_max = tl.max(m, axis=0)
    w = tl.where(ok & (m > float("-inf")), tl.exp(m - m_max), 0.0)
    d = tl.arange(0, D)
    acc = tl.load(acc_ptr + (base + sp)[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], axis=0) / tl.sum(l_part * w, axis=0)
    t = row // G
    head = kv * G + row % G
    tl.store(o_ptr + (t * H + head) * D + d, round_to(out, o_ptr.dtype.element_ty))


def attention(qkv: torch.Tensor, bias: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
              positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_pos: torch.Tensor,
              window: int, n_heads: int) -> torch.Tensor:  # fmt: skip
    """The fused q|k|v projection of T new positions, qkv [1, T, (H + 2 Hkv) D] (plus ``bias``
    [(H + 2 Hkv) D] if given), with cos/sin [T, D] at ``positions`` [T]: writes the rotated keys
    and the values into the caches [1, Hkv, S, D] at slots ``positions % S`` and returns the
    attention output [1, T, H, D].

    Keys are visible when ``positions[t] - window < slot_pos <= positions[t]`` (``slot_pos``
    already claims the new slots: asr/cache.py writes first); positions must be consecutive (the
    last one bounds the filled slots).
    """
    _, T, width = qkv.shape
    hkv, S, D = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    if width != (n_heads + 2 * hkv) * D:
        raise ValueError(f"qkv width {width} does not match {n_heads} + 2 x {hkv} heads of {D}")
    if k_cache.dtype != qkv.dtype or v_cache.dtype != qkv.dtype:  # q is rounded to the cache dtype
        raise ValueError(f"qkv is {qkv.dtype} but the cache dtype is {k_cache.dtype}/{v_cache.dtype}")
    if T == 0:
        raise ValueError("attention needs at least one new position")
    G = n_heads // hkv
    R = T * G
    # Every ring longer than one split is split, the encoder's too: one program per head walking
    # its whole window leaves most SMs idle.
    split = SPLIT if S > SPLIT else triton.cdiv(S, BLOCK_N) * BLOCK_N
    n_splits = triton.cdiv(S, split)
    out = torch.empty(1, T, n_heads, D, dtype=qkv.dtype, device=qkv.device)
    m = torch.empty(hkv, R, n_splits, dtype=torch.float32, device=qkv.device)
    l_part = torch.empty_like(m)
    acc = torch.empty(hkv, R, n_splits if n_splits > 1 else 0, D, dtype=torch.float32, device=qkv.device)
    qkv = qkv.contiguous()
    launch = kernels.launch_options(qkv)
    _attention_split_kernel[(hkv, triton.cdiv(R, BLOCK_R), n_splits)](
        qkv, qkv if bias is None else bias, cos.contiguous(), sin.contiguous(), k_cache, v_cache, slot_pos, positions,
        m, l_part, acc, out, T, S, window, 1.0 / math.sqrt(D), n_splits,
        H=n_heads, HKV=hkv, D=D, SPLIT=split, BLOCK_N=BLOCK_N, BLOCK_R=BLOCK_R, BLOCK_T=BLOCK_T,
        HAS_BIAS=bias is not None, FINAL=n_splits == 1, num_warps=4, **launch,
        # float32 models get float32 products (tl.dot would use TF32); so does the CPU interpreter,
        # which cannot multiply bf16 tiles.
        EXACT_DOT=not qkv.is_cuda or qkv.dtype == torch.float32,
        # A float32 model's rotation must round x*cos and rot(x)*sin separately, as PyTorch does;
        # the GPU compiler would otherwise contract them into one fma (bf16 rounds in between).
        **({"enable_fp_fusion": False} if qkv.is_cuda and qkv.dtype == torch.float32 else {}),
    )  # fmt: skip
    if n_splits > 1:
        _attention_merge_kernel[(hkv, R)](
            m, l_part, acc, positions, out, T, S, n_splits,
            H=n_heads, G=G, D=D, SPLIT=split, NS_BLOCK=triton.next_power_of_2(n_splits), num_warps=1,
            **launch,
        )  # fmt: skip
    return out
