"""Language decoder with Ada RMS-norm delay conditioning and a tied output head.

Input at every position p is ``E[token_p] + A_p`` (additive audio fusion; A is the adapter output
for audio token p). Layers are pre-norm with GQA sliding-window attention (window 8192) and a
SwiGLU FFN whose input is scaled by ``1 + ada_l(t_cond)``, a per-layer constant for a given delay.
Logits are ``RMSNorm(h) @ E^T``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asr import kernels
from asr.cache import RingKVCache
from asr.config import DecoderConfig
from asr.layers import CachedAttention, RMSNorm, Rotary, SwiGLU
from asr.quant import QLinear, QuantizedTensor
from asr.quant.fast import dense_linear

# The longest decoder chunk: the prompt, BOS + 32 left-pad tokens + at most 30 delay tokens.
MAX_PROMPT_TOKENS = 64


class TiedEmbedding(nn.Embedding):
    """Token embeddings that double as the output head (``logits = h E^T``)."""

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return dense_linear(h, self.weight)


class QuantizedTiedEmbedding(nn.Module):
    """The tied embedding kept packed (e.g. Q6_K in Q4_K_M files): rows dequantized on lookup,
    the head through the quantized linear path."""

    def __init__(self, qweight: QuantizedTensor, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.linear = QLinear(qweight, None, compute_dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, dim]
        return self.linear.rows(tokens)  # every linear form (asr/quant/fast.py) can look up rows

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = CachedAttention(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, biases=False)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = SwiGLU(cfg.dim, cfg.hidden_dim, w2_bias=False)
        # Bottleneck MLP of the delay embedding (".0" and ".2"; ".1" is the GELU).
        self.ada_rms_norm_t_cond = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ada_dim, bias=False),
            nn.GELU(),
            nn.Linear(cfg.ada_dim, cfg.dim, bias=False),
        )


def delay_embedding(delay_tokens: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Sinusoidal embedding of the scalar delay n: [cos(n w_k)]_k then [sin(n w_k)]_k, w_k = 1e4^(-2k/dim).

    Formed in the model dtype, as the reference does, so bf16 runs see the same rounding.
    """
    half = dim // 2
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device="cpu") / half)
    t = torch.full((1,), float(delay_tokens), dtype=dtype, device=device)
    angles = t * inv_freq.to(device=device, dtype=dtype)  # [half]
    return torch.cat((angles.cos(), angles.sin()))  # [dim]


class TextDecoder(nn.Module):
    """The decoder, its modules named as in the original checkpoint (tok_embeddings, layers, norm)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings: TiedEmbedding | QuantizedTiedEmbedding = TiedEmbedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device) -> RingKVCache:
        c = self.cfg
        return RingKVCache(c.n_layers, batch, c.n_kv_heads, c.sliding_window, c.head_dim, dtype, device,
                           slack=MAX_PROMPT_TOKENS)  # fmt: skip

    def ada_scales(self, delay_tokens: int) -> torch.Tensor:
        """Per-layer FFN input scales ``1 + ada_l(t_cond)`` for a delay: [n_layers, dim]. Compute once."""
        w = self.norm.weight  # its dtype and device are the model's
        t_cond = delay_embedding(delay_tokens, self.cfg.dim, w.dtype, w.device)
        return torch.stack([1 + layer.ada_rms_norm_t_cond(t_cond) for layer in self.layers])

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] int64 -> [B, T, dim]."""
        return self.tok_embeddings(tokens)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: RingKVCache,
        ada_scales: torch.Tensor,
    ) -> torch.Tensor:
        """x [B, T, dim] (token + audio embeddings) at absolute ``positions`` [T] -> logits [B, vocab]
        of the last position."""
        cos, sin = self.rotary.cos_sin(positions, x.dtype)
        cache.begin(positions)
        group = self.cfg.n_heads // self.cfg.n_kv_heads
        mask = None if kernels.active(x) else cache.mask(positions, group)  # one mask for every layer
        h, delta, bias = x, None, None  # the residual stream; a sublayer output (and bias) not yet added
        for i, layer in enumerate(self.layers):
            h, normed = layer.attention_norm.add(h, delta, bias=bias, defer=True)
            delta, bias = layer.attention(normed, cos, sin, positions, mask, cache, i)
            h, normed = layer.ffn_norm.add(h, delta, ada_scales[i], bias, defer=True)
            delta, bias = layer.feed_forward(normed)
        _, last = self.norm.add(h[:, -1], delta[:, -1], bias=bias)  # [B, dim]
        return self.tok_embeddings.head(last)  # tied head: [B, vocab]
