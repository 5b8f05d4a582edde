"""Causal audio encoder ("whisper_encoder") and the adapter to the decoder width.

mel [B, 128, 8n] -> conv stem (causal, left padding only, state carried between chunks; run as
two matmuls over time-major windows) -> [B, 4n, 1280] at 50 Hz -> 32 pre-norm layers with
sliding-window (750) attention -> final norm -> group 4 frames -> [B, n, 5120] -> Linear, GELU,
Linear -> [B, n, 3072].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asr import kernels
from asr.cache import RingKVCache
from asr.config import EncoderConfig, ModelConfig
from asr.layers import CachedAttention, RMSNorm, Rotary, SwiGLU
from asr.quant.fast import dense_gemv_applies

# Encoder positions per call at most: 64 audio tokens (5.12 s) of 4 positions. Bounds the
# activations of one call and is the KV ring's slack (asr/cache.py).
MAX_CHUNK_TOKENS = 64
MAX_CHUNK_POSITIONS = 4 * MAX_CHUNK_TOKENS


class ConvLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size=3, stride=stride)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = CachedAttention(cfg.dim, cfg.n_heads, cfg.n_heads, cfg.head_dim, biases=True)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = SwiGLU(cfg.dim, cfg.hidden_dim, w2_bias=True)


class Transformer(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class ConvState:
    """What the causal convs need from the previous chunk: 2 mel frames and 1 conv1 output (time-major)."""

    def __init__(self, batch: int, n_mels: int, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        self.mel_tail = torch.zeros(batch, 2, n_mels, dtype=dtype, device=device)  # conv1 left context
        self.conv1_tail = torch.zeros(batch, 1, dim, dtype=dtype, device=device)  # conv2 left context


def _causal_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (kernel 3, no padding) on time-major x [B, T, C] -> [B, (T - 3) // stride + 1, C_out].

    Each output frame is one row of a matmul: its window of 3 input frames, flattened channel-major,
    times the weight viewed as [C_out, C * 3]. At a few frames per call this is a GEMV, where
    cuDNN's conv spent most of its time converting layouts (about 0.1 ms per 80 ms on an H100).
    """
    windows = x.unfold(1, conv.kernel_size[0], conv.stride[0])  # [B, T_out, C, 3]
    flat = windows.reshape(-1, windows.shape[2] * windows.shape[3])  # [B T_out, C * 3], index c * 3 + j
    weight = conv.weight.view(conv.out_channels, -1)  # [C_out, C * 3]
    if dense_gemv_applies(flat, weight):
        # The GEMV, 8 frames at a time, rather than cuBLAS: inside CUDA graphs every capture
        # stream gets its own 32 MiB cuBLAS workspace, and nothing else in a quantized encoder
        # needs one.
        from asr.kernels.gemv import MAX_ROWS, dense_gemv

        chunks = [dense_gemv(rows, weight) for rows in flat.split(MAX_ROWS)]
        out = (chunks[0] if len(chunks) == 1 else torch.cat(chunks)) + conv.bias
    else:
        out = F.linear(flat, weight, conv.bias)
    return out.view(*windows.shape[:2], conv.out_channels)


class AudioEncoder(nn.Module):
    """The causal encoder; attribute names follow the original checkpoint (``whisper_encoder.*``)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv_layers = nn.ModuleList([ConvLayer(cfg.n_mels, cfg.dim, 1), ConvLayer(cfg.dim, cfg.dim, 2)])
        self.transformer = Transformer(cfg)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)

    def new_conv_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> ConvState:
        return ConvState(batch, self.cfg.n_mels, self.cfg.dim, dtype, device)

    def new_cache(self, batch: int, dtype: torch.dtype, device: torch.device) -> RingKVCache:
        c = self.cfg
        return RingKVCache(c.n_layers, batch, c.n_heads, c.sliding_window, c.head_dim, dtype, device,
                           slack=MAX_CHUNK_POSITIONS)  # fmt: skip

    def stem(self, mel: torch.Tensor, state: ConvState) -> torch.Tensor:
        """mel [B, 128, 2m] (new frames only) -> [B, m, dim], carrying the conv state."""
        conv1, conv2 = self.conv_layers[0].conv, self.conv_layers[1].conv
        x = torch.cat((state.mel_tail, mel.transpose(1, 2)), dim=1)  # [B, 2 + 2m, 128]
        state.mel_tail.copy_(x[:, -2:])  # in place: the tails are static buffers (CUDA graphs)
        h = F.gelu(_causal_conv(conv1, x))  # [B, 2m, dim]
        h = torch.cat((state.conv1_tail, h), dim=1)  # [B, 1 + 2m, dim]
        state.conv1_tail.copy_(h[:, -1:])
        return F.gelu(_causal_conv(conv2, h))  # [B, m, dim]

    def forward(self, mel: torch.Tensor, state: ConvState, cache: RingKVCache, positions: torch.Tensor) -> torch.Tensor:
        """mel [B, 128, 8n] -> encoder frames [B, 4n, dim] at absolute 50 Hz ``positions`` [4n]."""
        h = self.stem(mel.to(state.mel_tail.dtype), state)
        cos, sin = self.rotary.cos_sin(positions, h.dtype)
        cache.begin(positions)
        mask = None if kernels.active(h) else cache.mask(positions)  # one mask for every layer
        delta, bias = None, None  # a sublayer output (and its bias) not yet added to the residual stream h
        for i, layer in enumerate(self.transformer.layers):
            h, normed = layer.attention_norm.add(h, delta, bias=bias, defer=True)
            delta, bias = layer.attention(normed, cos, sin, positions, mask, cache, i)
            h, normed = layer.ffn_norm.add(h, delta, bias=bias, defer=True)
            delta, bias = layer.feed_forward(normed)
        return self.transformer.norm.add(h, delta, bias=bias)[1]


class Adapter(nn.Sequential):
    """``audio_language_projection``: Linear(5120 -> 3072), GELU, Linear(3072 -> 3072), no biases."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(
            nn.Linear(cfg.adapter_in, cfg.decoder.dim, bias=False),
            nn.GELU(),
            nn.Linear(cfg.decoder.dim, cfg.decoder.dim, bias=False),
        )

    def group(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, 4n, 1280] -> [B, n, 5120]: token j = frames 4j..4j+3 concatenated (frame-major)."""
        B, T, D = frames.shape
        return self(frames.reshape(B, T // 4, D * 4))
