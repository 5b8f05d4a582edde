"""RoPE fused with the KV-ring write, and split-KV attention over a ring-buffer cache.

``rope_store`` takes the fused q|k|v projection of T new positions, rotates q and k (in the
reference's bf16 rounding order: x*cos, rot*sin, their sum, each rounded), returns q and writes
the rotated k and v into the ring slots ``position % slots``.

``attention`` is flash-decoding: the ring's slots are cut into splits of ``SPLIT`` keys, one
program per (KV head, block of query rows, split) keeps an online softmax over its keys, and a
second kernel merges the splits. At batch 1 a one-query decode step has only 8 KV heads; SDPA's
flash kernel runs one block per head and uses 8 of an H100's 132 SMs (performance.md §3), here
every split is a block. Splits past the filled part of the ring exit at once, so a stream that
has used 2048 positions pays for 2048 keys whatever the window. All G = H/Hkv query heads of a
KV head, for all T positions, are the rows of one tile, so each key is read once per step.

A key in slot j is visible to the query at position p when ``p - W < slot_pos[j] <= p``; empty
slots hold -1. The cache has already been written for this forward (write-first, see
asr/cache.py), so the new keys are in the ring.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from asr.kernels.rounding import round_to

# Per layer, in a CUDA graph on an H100 (README, "Attention per layer"): the encoder's full ring
# (1024 slots, 4 positions, 32 heads) 18.4 us in one pass per head, 6.4 us in splits of 256 keys
# with 128-key steps; the decoder at 2048 positions 10.7 -> 8.0 us, at 8192 12.7 -> 14.5 us.
SPLIT = 256  # keys per split
BLOCK_N = 128  # keys per inner step
BLOCK_R = 16  # query rows per program (tl.dot needs at least 16)


@triton.jit
def _rope_store_kernel(qkv_ptr, bias_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, k_ptr, v_ptr,
                       H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, S, HAS_BIAS: tl.constexpr):  # fmt: skip
    t = tl.program_id(0)
    h = tl.program_id(1)  # 0..H-1: query heads, H..H+HKV-1: key heads
    dt: tl.constexpr = q_ptr.dtype.element_ty
    width: tl.constexpr = (H + 2 * HKV) * D
    half: tl.constexpr = D // 2
    offs = tl.arange(0, D)
    src = qkv_ptr + t * width + h * D
    x = tl.load(src + offs).to(tl.float32)
    partner = tl.load(src + (offs + half) % D).to(tl.float32)
    if HAS_BIAS:  # the projection's bias, rounded as ``qkv + bias`` is
        x = round_to(x + tl.load(bias_ptr + h * D + offs).to(tl.float32), dt).to(tl.float32)
        partner = round_to(partner + tl.load(bias_ptr + h * D + (offs + half) % D).to(tl.float32), dt).to(tl.float32)
    rotated = tl.where(offs < half, -partner, partner)
    cos = tl.load(cos_ptr + t * D + offs).to(tl.float32)
    sin = tl.load(sin_ptr + t * D + offs).to(tl.float32)
    a = round_to(x * cos, dt).to(tl.float32)
    b = round_to(rotated * sin, dt).to(tl.float32)
    y = round_to(a + b, dt)
    if h < H:
        tl.store(q_ptr + (t * H + h) * D + offs, y)
    else:
        kv = h - H
        slot = tl.load(pos_ptr + t) % S
        tl.store(k_ptr + (kv * S + slot) * D + offs, y)
        v = tl.load(qkv_ptr + t * width + (H + HKV + kv) * D + offs)
        if HAS_BIAS:
            v = round_to(v.to(tl.float32) + tl.load(bias_ptr + (H + HKV + kv) * D + offs).to(tl.float32), dt)
        tl.store(v_ptr + (kv * S + slot) * D + offs, v)


def rope_store(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
               k_cache: torch.Tensor, v_cache: torch.Tensor, n_heads: int, n_kv_heads: int,
               bias: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """qkv [1, T, (H + 2 Hkv) D] (plus ``bias`` [(H + 2 Hkv) D] if given); cos/sin [T, D];
    positions [T]; caches [1, Hkv, S, D] -> q [1, T, H, D]."""
    _, T, width = qkv.shape
    D = width // (n_heads + 2 * n_kv_heads)
    qkv = qkv.contiguous()
    q = torch.empty(1, T, n_heads, D, dtype=qkv.dtype, device=qkv.device)
    _rope_store_kernel[(T, n_heads + n_kv_heads)](
        qkv, qkv if bias is None else bias, cos.contiguous(), sin.contiguous(), positions, q, k_cache, v_cache,
        H=n_heads, HKV=n_kv_heads, D=D, S=k_cache.shape[2], HAS_BIAS=bias is not None, num_warps=1,
    )  # fmt: skip
    return q


@triton.jit
def _attention_split_kernel(q_ptr, k_ptr, v_ptr, slot_pos_ptr, pos_ptr, m_ptr, l_ptr, acc_ptr, o_ptr,
                            T, S, window, scale, NS,
                            H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr,
                            BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, EXACT_DOT: tl.constexpr,
                            FINAL: tl.constexpr):  # fmt: skip
    kv = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # row r = (position r // G, head r % G)
    split = tl.program_id(2)
    R = T * G
    row_ok = rows < R
    t = rows // G
    head = kv * G + rows % G
    d = tl.arange(0, D)
    q = tl.load(q_ptr + (t * H + head)[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)  # [BR, D]
    q_pos = tl.load(pos_ptr + t, mask=row_ok, other=0)  # [BR]
    filled = tl.minimum(tl.load(pos_ptr + T - 1) + 1, S)  # slots 0..filled-1 have ever been written
    start = split * SPLIT
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
                            NS_BLOCK: tl.constexpr):  # fmt: skip
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


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_pos: torch.Tensor,
              positions: torch.Tensor, window: int) -> torch.Tensor:  # fmt: skip
    """q [1, T, H, D] at ``positions`` [T] over caches [1, Hkv, S, D] -> [1, T, H, D].

    Keys are visible when ``positions[t] - window < slot_pos <= positions[t]``; positions must be
    consecutive (the last one bounds the filled slots).
    """
    _, T, H, D = q.shape
    hkv, S = k_cache.shape[1], k_cache.shape[2]
    G = H // hkv
    R = T * G
    # Every ring longer than one split is split, the encoder's too: one program per head walking
    # its whole window leaves most SMs idle.
    split = SPLIT if S > SPLIT else triton.cdiv(S, BLOCK_N) * BLOCK_N
    n_splits = triton.cdiv(S, split)
    out = torch.empty_like(q)
    m = torch.empty(hkv, R, n_splits, dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m)
    acc = torch.empty(hkv, R, n_splits if n_splits > 1 else 0, D, dtype=torch.float32, device=q.device)
    _attention_split_kernel[(hkv, triton.cdiv(R, BLOCK_R), n_splits)](
        q, k_cache, v_cache, slot_pos, positions, m, l_part, acc, out, T, S, window, 1.0 / math.sqrt(D), n_splits,
        H=H, G=G, D=D, SPLIT=split, BLOCK_N=BLOCK_N, BLOCK_R=BLOCK_R, num_warps=4, FINAL=n_splits == 1,
        # float32 models get float32 products (tl.dot would use TF32); so does the CPU interpreter,
        # which cannot multiply bf16 tiles.
        EXACT_DOT=not q.is_cuda or q.dtype == torch.float32,
    )  # fmt: skip
    if n_splits > 1:
        _attention_merge_kernel[(hkv, R)](
            m, l_part, acc, positions, out, T, S, n_splits,
            H=H, G=G, D=D, SPLIT=split, NS_BLOCK=triton.next_power_of_2(n_splits), num_warps=1,
        )  # fmt: skip
    return out
