"""Preallocated ring-buffer KV caches for sliding-window attention.

A window of W positions is stored in S = W + slack slots; position p lives in slot ``p % S``.
Keys are stored after RoPE at their absolute position, so the order of slots never matters:
attention is permutation-invariant over keys, and a per-slot position array masks empty slots
and keys that fell out of the window. Memory is fixed at allocation, however long the stream runs.

Every forward writes its T new keys first and then attends over the ring alone (no copy, one
static buffer for CUDA graphs and the attention kernel). The slack makes that safe: the slots a
chunk overwrites held positions at most p_first + T - 1 - S < p_first - W + 1 when slack >= T,
which no query of the chunk can see. Chunks are therefore limited to ``slack`` positions.

Example (W = 4, slack = 2, S = 6): after positions 0..6 the slots hold [6, 1, 2, 3, 4, 5]. A
chunk of positions 7, 8 writes slots 1 and 2 (dropping 1 and 2); query 7 sees 4..7, query 8
sees 5..8, all still in the ring.

All rows of a batch advance in lockstep (one position array serves every row).
"""

from __future__ import annotations

import torch


class RingKVCache:
    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        window: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        slack: int,
    ) -> None:
        self.window = window
        self.slack = slack
        self.slots = window + slack
        shape = (batch, n_kv_heads, self.slots, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.slot_pos = torch.full((self.slots,), -1, dtype=torch.long, device=device)  # [S]
        self._slots = torch.empty(0, dtype=torch.long, device=device)  # of the forward in progress

    def reset(self) -> None:
        self.slot_pos.fill_(-1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def begin(self, positions: torch.Tensor) -> None:
        """Start a forward over ``positions`` [T] (consecutive, absolute): claim their slots."""
        if positions.shape[0] > self.slack:
            raise ValueError(f"a chunk of {positions.shape[0]} positions exceeds the cache slack {self.slack}")
        self._slots = positions % self.slots
        self.slot_pos.index_copy_(0, self._slots, positions)

    def mask(self, positions: torch.Tensor, group: int = 1) -> torch.Tensor:
        """Boolean [group * T, F]: query p sees keys with p - W < pos <= p; empty slots have pos = -1.

        Rows repeat the T queries ``group`` times (GQA folded into query rows: row g T + t is
        query t). F = S on CUDA; on CPU only the F slots written so far (slots fill in order, and
        the position is on the host), so attention can skip the never-written tail.
        """
        filled = self.slots if positions.is_cuda else min(int(positions[-1]) + 1, self.slots)
        qp = positions[:, None]
        kp = self.slot_pos[None, :filled]
        visible = (kp >= 0) & (kp <= qp) & (kp > qp - self.window)  # [T, F]
        return visible if group == 1 else visible.repeat(group, 1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new k, v [B, Hkv, T, D]; return the ring's keys, values [B, Hkv, S, D]."""
        self.k[layer].index_copy_(2, self._slots, k)
        self.v[layer].index_copy_(2, self._slots, v)
        return self.k[layer], self.v[layer]
