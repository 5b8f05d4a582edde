"""One CUDA graph per decoder step: the whole single-position forward replayed without Python.

An eager step launches several hundred small kernels and spends most of its time in Python and
launch overhead (27.6 ms measured on an H100 for the full model). The step is static-shaped
once the KV ring is preallocated: input token, audio embedding and position live in fixed
buffers, the position enters as a device tensor (RoPE angles, ring slot and mask are computed
on the device), and the argmax stays on the device. Replaying the captured graph costs one
launch plus one 8-byte copy back.

Capture runs the step once for warm-up on a side stream. That warm-up writes the ring slot of
the position it is given; we give it the next position to run, whose slot holds only a key the
next query no longer sees, and restore the slot positions afterwards, so the cache is unchanged.
The warm-up also notes the order of the products, so that the captured graph can pull each
one's weights into L2 while the one before it runs (asr/prefetch.py).
"""

from __future__ import annotations

import torch

from asr import prefetch
from asr.cache import RingKVCache
from asr.decoder import TextDecoder
from asr.encoder import ConvState
from asr.model import VoxtralRealtime


def encode_tokens(
    net: VoxtralRealtime, mel: torch.Tensor, conv: ConvState, cache: RingKVCache, positions: torch.Tensor
) -> torch.Tensor:
    """mel [B, 128, 8n] -> audio embeddings [B, n, dim] (encoder, then the adapter)."""
    frames = net.whisper_encoder(mel, conv, cache, positions)  # [B, 4n, enc_dim]
    return net.audio_language_projection.group(frames)


class GraphedEncodeStep:
    """The encoder and adapter for n 80 ms tokens (8n mel frames, 4n encoder positions) as a graph.

    Warm-up runs on scratch copies of the conv state and the ring (a chunk attends over slots it
    is about to overwrite, so a warm-up on the real ring would corrupt keys still in view);
    capture records kernels without running them, on the real buffers.
    """

    def __init__(self, net: VoxtralRealtime, conv: ConvState, cache: RingKVCache, n_tokens: int = 1) -> None:
        dtype, device = conv.mel_tail.dtype, conv.mel_tail.device
        self.net = net
        self.mel = torch.zeros(1, net.cfg.encoder.n_mels, 8 * n_tokens, dtype=torch.float32, device=device)
        self.positions = torch.arange(4 * n_tokens, device=device)  # [4n]
        self._offsets = torch.arange(4 * n_tokens, device=device)
        scratch_conv = net.whisper_encoder.new_conv_state(1, dtype, device)
        scratch_cache = net.whisper_encoder.new_cache(1, dtype, device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), prefetch.recording() as products:
            encode_tokens(net, self.mel, scratch_conv, scratch_cache, self.positions)
        torch.cuda.current_stream(device).wait_stream(side)
        del scratch_conv, scratch_cache
        self.graph = torch.cuda.CUDAGraph()
        prefetch_stream = prefetch.side_stream(device)
        with torch.cuda.graph(self.graph), prefetch.issuing(products, prefetch_stream) as plan:
            self.embeds = encode_tokens(net, self.mel, conv, cache, self.positions)[0]  # [n, dim]
        self.prefetches = plan.launched

    def __call__(self, mel: torch.Tensor, first_position: int) -> torch.Tensor:
        """mel [128, 8n] of the next n tokens -> their audio embeddings [n, dim] (a copy)."""
        self.mel.copy_(mel[None])
        torch.add(self._offsets, first_position, out=self.positions)
        self.graph.replay()
        return self.embeds.clone()


class GraphedDecodeStep:
    def __init__(self, decoder: TextDecoder, cache: RingKVCache, ada: torch.Tensor, next_pos: int) -> None:
        device, dtype = ada.device, ada.dtype
        self.decoder, self.cache, self.ada = decoder, cache, ada
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)  # [B=1, T=1]
        self.audio = torch.zeros(1, 1, decoder.cfg.dim, dtype=dtype, device=device)  # [1, 1, dim]
        self.position = torch.full((1,), next_pos, dtype=torch.long, device=device)  # [T=1]
        saved_slots = cache.slot_pos.clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            with prefetch.recording() as products:
                self._forward()  # warm-up: lazy kernel init (cuBLAS handles, SDPA choice) outside capture
            cache.slot_pos.copy_(saved_slots)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        prefetch_stream = prefetch.side_stream(device)
        with torch.cuda.graph(self.graph), prefetch.issuing(products, prefetch_stream) as plan:
            self.next_token = self._forward()  # [1] int64, on the device
        self.prefetches = plan.launched
        cache.slot_pos.copy_(saved_slots)  # capture does not run kernels, but be explicit

    def _forward(self) -> torch.Tensor:
        x = self.decoder.embed(self.token) + self.audio  # [1, 1, dim]
        logits = self.decoder(x, self.position, self.cache, self.ada)  # [1, vocab]
        return logits.argmax(-1)

    def __call__(self, token: int, audio: torch.Tensor, position: int) -> int:
        """Run position ``position`` with the fed-back ``token`` and audio embedding [1, dim]."""
        self.token.fill_(token)
        self.audio.copy_(audio.view(1, 1, -1))
        self.position.fill_(position)
        self.graph.replay()
        return int(self.next_token[0])
