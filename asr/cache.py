"""Preallocated ring-buffer KV caches for sliding-window attention.

A window of W positions is stored in W slots; position p lives in slot ``p % W``. Keys are stored
after RoPE at their absolute position, so the order of slots never matters: attention is
permutation-invariant over keys, and a per-slot position array masks empty slots and keys that
fell out of the window. Memory is fixed at allocation, however long the stream runs.

Example (W = 4, one layer): after positions 0..5 the slots hold positions [4, 5, 2, 3]. A step at
position 6 first writes slot 2 (dropping position 2, which query 6 no longer sees: 6 - 4 < pos),
then attends over slots [4, 5, 6, 3].

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
    ) -> None:
        self.window = window
        shape = (batch, n_kv_heads, window, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.slot_pos = torch.full((window,), -1, dtype=torch.long, device=device)  # [W]
        self._positions = torch.empty(0, dtype=torch.long, device=device)  # of the forward in progress

    def reset(self) -> None:
        self.slot_pos.fill_(-1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def begin(self, positions: torch.Tensor) -> torch.Tensor:
        """Start a forward over ``positions`` [T] (consecutive, absolute); returns the key positions [S].

        A single step (T = 1) writes first and attends over the ring itself (no copy): the slot it
        overwrites holds position p - W, which query p does not see. A chunk (T > 1) attends over
        the old ring concatenated with the new keys, because writing first would drop keys that
        the chunk's earlier queries still need.
        """
        self._positions = positions
        if positions.shape[0] == 1:
            key_pos = self.slot_pos.clone()
            key_pos[positions % self.window] = positions
        else:
            key_pos = torch.cat((self.slot_pos, positions))
        return key_pos

    def mask(self, positions: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """Boolean [T, S]: query p sees keys with p - W < pos <= p; empty slots have pos = -1."""
        qp = positions[:, None]
        kp = key_pos[None, :]
        return (kp >= 0) & (kp <= qp) & (kp > qp - self.window)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new k, v [B, Hkv, T, D]; return keys, values [B, Hkv, S, D] to attend over."""
        positions = self._positions
        T = positions.shape[0]
        if T == 1:
            slot = positions % self.window  # [1]
            self.k[layer].index_copy_(2, slot, k)
            self.v[layer].index_copy_(2, slot, v)
            return self.k[layer], self.v[layer]
        keys = torch.cat((self.k[layer], k), dim=2)
        values = torch.cat((self.v[layer], v), dim=2)
        n = min(T, self.window)  # only the last W new positions survive in the ring
        slots = positions[T - n :] % self.window
        self.k[layer].index_copy_(2, slots, k[:, :, T - n :])
        self.v[layer].index_copy_(2, slots, v[:, :, T - n :])
        return keys, values

    def commit(self) -> None:
        """End the forward: record which positions the slots now hold."""
        keep = self._positions[-self.window :]
        self.slot_pos[keep % self.window] = keep
