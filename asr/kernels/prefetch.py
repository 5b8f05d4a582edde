"""A kernel that asks the GPU to pull tensors into L2 and returns at once (asr/prefetch.py uses it).

Nothing is loaded into registers, so a few small programs can keep megabytes in flight without
taking room from the kernels they run beside. Two forms:

* ``bulk``: ``cp.async.bulk.prefetch.L2`` (Hopper's bulk-copy unit), one instruction per
  ``CHUNK`` bytes per thread.
* ``lines``: ``prefetch.global.L2``, one instruction per 128-byte line.

Both are hints: the hardware may drop them, and no value anywhere depends on them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LINE = tl.constexpr(128)  # bytes per L2 line
CHUNK = tl.constexpr(16384)  # bytes per bulk prefetch instruction
MAX_TENSORS = 4  # tensors per launch (a quantized weight is codes, scales, offsets)


@triton.jit
def _bulk_range(base, n_bytes, pid, n_programs, BLOCK: tl.constexpr, CHUNK_BYTES: tl.constexpr):
    for start in range(pid * BLOCK * CHUNK_BYTES, n_bytes, n_programs * BLOCK * CHUNK_BYTES):
        offs = start + tl.arange(0, BLOCK).to(tl.int64) * CHUNK_BYTES  # [BLOCK] byte offsets
        size = tl.minimum(n_bytes - offs, CHUNK_BYTES)  # a multiple of 16 (the caller rounds n_bytes)
        size = tl.where(size > 0, size, 0).to(tl.int32)
        ptrs = base + tl.where(size > 0, offs, 0)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.u32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
            "=r,l,r", [ptrs, size], dtype=tl.int32, is_pure=False, pack=1)  # fmt: skip


@triton.jit
def _line_range(base, n_bytes, pid, n_programs, BLOCK: tl.constexpr, LINE_BYTES: tl.constexpr):
    for start in range(pid * BLOCK * LINE_BYTES, n_bytes, n_programs * BLOCK * LINE_BYTES):
        offs = start + tl.arange(0, BLOCK).to(tl.int64) * LINE_BYTES  # [BLOCK]
        ptrs = base + tl.minimum(offs, n_bytes - 1)  # past the end: the last line again
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)  # fmt: skip


@triton.jit
def _prefetch_kernel(p0, n0, p1, n1, p2, n2, p3, n3, BLOCK: tl.constexpr, BULK: tl.constexpr):
    pid, n_programs = tl.program_id(0), tl.num_programs(0)
    if BULK:
        _bulk_range(p0, n0, pid, n_programs, BLOCK, CHUNK)
        _bulk_range(p1, n1, pid, n_programs, BLOCK, CHUNK)
        _bulk_range(p2, n2, pid, n_programs, BLOCK, CHUNK)
        _bulk_range(p3, n3, pid, n_programs, BLOCK, CHUNK)
    else:
        _line_range(p0, n0, pid, n_programs, BLOCK, LINE)
        _line_range(p1, n1, pid, n_programs, BLOCK, LINE)
        _line_range(p2, n2, pid, n_programs, BLOCK, LINE)
        _line_range(p3, n3, pid, n_programs, BLOCK, LINE)


def prefetch_l2(tensors: list[torch.Tensor], programs: int, bulk: bool) -> None:
    """Queue L2 prefetches of up to MAX_TENSORS contiguous CUDA tensors on the current stream."""
    if not 1 <= len(tensors) <= MAX_TENSORS:
        raise ValueError(f"prefetch_l2 takes 1 to {MAX_TENSORS} tensors, got {len(tensors)}")
    args: list[object] = []
    for t in tensors:
        # Bulk prefetches move multiples of 16 bytes from 16-byte aligned addresses; the last few
        # bytes of an odd-sized tensor stay where they are.
        args += [t.view(-1).view(torch.uint8), t.numel() * t.element_size() // 16 * 16]
    for _ in range(MAX_TENSORS - len(tensors)):
        args += [args[0], 0]
    _prefetch_kernel[(programs,)](*args, BLOCK=32 if bulk else 256, BULK=bulk, num_warps=1 if bulk else 4)
