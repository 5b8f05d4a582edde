"""Building blocks shared by the encoder and the decoder: RMSNorm, RoPE, SwiGLU, cached attention.

Layout conventions (see ``asr/weights/names.py``): q/k projection rows are stored in the "NeoX
halves" order used by Hugging Face checkpoints, so RoPE rotates dimension i with i + head_dim/2.
Checkpoints in Mistral's original interleaved order are permuted once at load.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from asr import kernels
from asr.cache import RingKVCache

if TYPE_CHECKING:
    from asr.kernels.gemv import NormedInput  # imports Triton: only where the kernels run


class RMSNorm(nn.Module):
    """RMS normalisation with fp32 statistics; the gain is applied after casting back, as in HF."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., dim] -> normalised x times the gain (times ``scale`` [dim], the decoder's ada scale)."""
        if kernels.active(x):
            from asr.kernels.norm import rmsnorm

            return rmsnorm(x, self.weight, self.eps, scale)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        out = self.weight * normed.to(x.dtype)
        return out if scale is None else out * scale

    def add(self, residual: torch.Tensor, delta: torch.Tensor | None, scale: torch.Tensor | None = None,
            bias: torch.Tensor | None = None, defer: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor | PendingNorm]:  # fmt: skip
        """The pre-norm step: h = residual + (delta + bias), and norm(h) (* scale).

        ``delta`` None: h = residual. ``bias`` is a sublayer's output bias left to this step.
        ``defer``: the caller hands the norm to one projection through ``project``; with
        ``kernels.fused_norm()`` on the kernel path it then gets a :class:`PendingNorm`, which a
        GEMV computes as it loads its input.
        """
        if defer and kernels.fused_norm() and kernels.active(residual):
            pending = PendingNorm(self, residual, delta, scale, bias)
            return pending.h, pending
        if delta is None:
            return residual, self(residual, scale)
        if kernels.active(residual):
            from asr.kernels.norm import add_rmsnorm

            return add_rmsnorm(residual, delta, self.weight, self.eps, scale, bias)
        h = residual + (delta if bias is None else delta + bias)
        return h, self(h, scale)


class PendingNorm:
    """A pre-norm's output not formed yet: ``norm(residual + (delta + bias)) (* scale)``.

    The projection that reads it may form it as it loads its input (a GEMV form's
    ``normed_product``, asr/kernels/gemv.py), which saves the norm's own launch; anything else
    gets ``value()`` from the norm kernel. Either way ``h``, the residual after the add, is
    written by the time that projection's product exists, so the stream reads it after that.
    """

    def __init__(self, norm: RMSNorm, residual: torch.Tensor, delta: torch.Tensor | None,
                 scale: torch.Tensor | None, bias: torch.Tensor | None) -> None:  # fmt: skip
        self.norm, self.residual, self.delta, self.scale, self.bias = norm, residual, delta, scale, bias
        # [..., dim], contiguous whatever the residual's strides: the GEMV writes it as rows.
        self.h = residual if delta is None else residual.new_empty(residual.shape)
        self._value: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.residual.shape

    def value(self) -> torch.Tensor:
        """The norm's output [..., dim], from the norm kernel (once)."""
        if self._value is None:
            from asr.kernels.norm import add_rmsnorm

            self._value = add_rmsnorm(self.residual, self.delta, self.norm.weight, self.norm.eps, self.scale,
                                      self.bias, h=self.h)[1]  # fmt: skip
        return self._value

    def gemv_input(self) -> tuple[torch.Tensor, NormedInput]:
        """The residual stream's rows [M, dim] and what a GEMV needs to form the norm from them."""
        from asr.kernels.gemv import NormedInput

        dim = self.residual.shape[-1]
        rows = self.residual.reshape(-1, dim)
        delta = None if self.delta is None else self.delta.reshape(-1, dim)
        h = None if self.delta is None else self.h.view(-1, dim)
        return rows, NormedInput(self.norm.weight, self.norm.eps, delta, self.bias, self.scale, h)


def materialized(x: torch.Tensor | PendingNorm) -> torch.Tensor:
    return x.value() if isinstance(x, PendingNorm) else x


def project(layer: nn.Module, x: torch.Tensor | PendingNorm) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``layer(x)`` as (product, bias still to add). A repacked quantized layer leaves its bias to
    the kernel that consumes the product (the RoPE ring write, the residual add), which saves a
    launch per projection; the others add their own (cuBLAS fuses it). A :class:`PendingNorm` goes
    to the layer's ``normed_product`` where it has one that takes it."""
    if isinstance(x, PendingNorm):
        fused = getattr(layer, "normed_product", None)
        out = None if fused is None else fused(x)
        if out is not None:
            return out
        x = x.value()
    if getattr(layer, "unbiased", None) is not None and layer.bias is not None:
        return layer.unbiased(x), layer.bias
    return layer(x), None


class SwiGLU(nn.Module):
    """``w2(silu(w1 x) * w3 x)``; the encoder's w2 has a bias, the decoder's has none.

    After loading, ``asr/fuse.py`` may replace w1 and w3 by one ``w13`` whose output is
    ``[w1 x | w3 x]``: one weight read and one launch instead of two.
    """

    def __init__(self, dim: int, hidden_dim: int, w2_bias: bool) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=w2_bias)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w13: nn.Module | None = None

    def forward(self, x: torch.Tensor | PendingNorm) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output as (product, w2's bias still to add): see ``project``."""
        if self.w13 is None:
            x = materialized(x)
            return project(self.w2, F.silu(self.w1(x)) * self.w3(x))
        gate_up, _ = project(self.w13, x)  # [..., 2 * hidden]; w13 has no bias
        if kernels.active(gate_up):
            from asr.kernels.norm import silu_mul

            # A GEMV form of w2 takes [gate | up] itself and applies SiLU-times-up as it loads
            # its input: one launch fewer per layer, the same bits (asr/kernels/gemv.py).
            fused = getattr(self.w2, "glu_product", None) if kernels.fused_swiglu() else None
            out = None if fused is None else fused(gate_up)
            return out if out is not None else project(self.w2, silu_mul(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return project(self.w2, F.silu(gate) * up)


class Rotary:
    """RoPE tables computed on the fly at absolute positions.

    The angle ``pos * inv_freq`` is formed in float64 and reduced modulo 2*pi before cos/sin, so a
    stream of a day (about 1.1 M decoder positions) rotates as exactly as one of a minute; an fp32
    product would be off by about 0.06 rad there. ``inv_freq`` itself is the fp32 value the
    reference computes, so short streams match it bit for bit in the table.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        steps = torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu")  # never on meta
        inv32 = 1.0 / (theta ** (steps / head_dim))
        self.inv_freq = inv32.double()  # [head_dim/2]
        self._on_device: dict[torch.device, torch.Tensor] = {}  # copies made once (CUDA graphs need that)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions: [T] int64 -> cos, sin: [T, head_dim] in ``dtype`` (halves duplicated)."""
        inv = self._on_device.get(positions.device)
        if inv is None:
            inv = self._on_device[positions.device] = self.inv_freq.to(positions.device)
        angles = torch.remainder(positions.double()[:, None] * inv[None, :], 2 * math.pi)  # [T, hd/2]
        angles = torch.cat((angles, angles), dim=-1).float()  # [T, hd]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos/sin: [T, D]. Rotates pairs (i, i + D/2)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class CachedAttention(nn.Module):
    """Causal sliding-window attention over a ring-buffer KV cache (GQA when n_kv_heads < n_heads).

    After loading, ``asr/fuse.py`` may replace wq, wk and wv by one ``wqkv`` (output
    ``[q | k | v]``). With the fused projection on CUDA the step runs the projection and split-KV
    attention, which also rotates q and k and writes the ring (asr/kernels/attention.py).
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, biases: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        # Whisper-style encoder: q, v and o have biases, k has none. The decoder has no biases.
        self.wq = nn.Linear(dim, n_heads * head_dim, bias=biases)
        self.wk = nn.Linear(dim, n_kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * head_dim, bias=biases)
        self.wo = nn.Linear(n_heads * head_dim, dim, bias=biases)
        self.wqkv: nn.Module | None = None

    def forward(
        self,
        x: torch.Tensor | PendingNorm,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        cache: RingKVCache,
        layer: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [B, T, dim]; cos/sin: [T, head_dim]; positions [T]; mask [G T, F] from
        ``cache.mask(positions, G)``, G = n_heads / n_kv_heads (None on the kernel path)
        -> ([B, T, dim], wo's bias still to add: see ``project``)."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.wqkv is not None and B == 1 and kernels.active(x.residual if isinstance(x, PendingNorm) else x):
            from asr.kernels.attention import attention

            qkv, qkv_bias = project(self.wqkv, x)  # [1, T, (H + 2 Hkv) D]
            out = attention(qkv, qkv_bias, cos, sin, positions, cache.k[layer], cache.v[layer], cache.slot_pos,
                            cache.window, H)  # fmt: skip  # [1, T, H, D]; the new keys and values are in the ring
            return project(self.wo, out.view(1, T, H * D))
        x = materialized(x)
        if self.wqkv is not None:
            q, k, v = self.wqkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        q = q.view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
        k = k.view(B, T, Hkv, D).transpose(1, 2)  # [B, Hkv, T, D]
        v = v.view(B, T, Hkv, D).transpose(1, 2)  # [B, Hkv, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values = cache.update(layer, k, v)  # [B, Hkv, S, D]
        # GQA as plain attention: the G query heads of a KV head become G x T query rows, so no
        # backend copies keys per query head. [B, H, T, D] -> [B, Hkv, G T, D]
        G = H // Hkv
        if mask is None:
            mask = cache.mask(positions, G)
        filled = mask.shape[-1]  # on CPU the mask leaves out never-written slots: so do the keys
        keys, values = keys[:, :, :filled], values[:, :, :filled]
        out = F.scaled_dot_product_attention(q.reshape(B, Hkv, G * T, D), keys, values, attn_mask=mask)
        return project(self.wo, out.view(B, H, T, D).transpose(1, 2).reshape(B, T, H * D))
