"""One model stream: a prompt, its caches, and the step loop from padded samples to token ids.

A :class:`ModelStream` knows nothing about input sample rates, rollovers or text. It takes real
16 kHz samples (it adds the left pad itself), turns every complete 80 ms token of audio into an
audio embedding, and runs the decoder as far as the embeddings reach:

  positions 0 .. L-1 (L = 1 + 32 + delay) are the prompt: BOS, then STREAMING_PAD, plus audio;
  the prompt is prefilled at once and yields y_{L-1}; each later position p feeds y_{p-1} plus
  audio embedding p and yields y_p. Every argmax is fed back, control ids included.

``finish`` appends the right pad so the delayed text of the last words comes out, and runs to
the last padded position (N - 1), as the reference's streaming generation does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from asr.audio import (
    FRAMES_PER_TOKEN,
    HALF_WINDOW,
    LEFT_PAD_TOKENS,
    SAMPLES_PER_TOKEN,
    MelStream,
    right_pad_samples,
    total_tokens,
)
from asr.encoder import MAX_CHUNK_TOKENS
from asr.graphs import GraphedDecodeStep, GraphedEncodeStep, encode_tokens
from asr.tokens import BOS_ID, EOS_ID, STREAMING_PAD_ID

# Encoder calls of up to this many tokens replay a graph captured for their size (audio arrives in
# blocks of a few tokens at most; longer runs, such as the first chunk, run eagerly).
MAX_GRAPHED_ENCODER_TOKENS = 8


@dataclass(frozen=True, slots=True)
class Step:
    """A generated id and the decoder position that produced it."""

    position: int
    id: int


class ModelStream:
    def __init__(self, model: object, delay_tokens: int) -> None:
        from asr.runtime import Model  # typing only; avoids an import cycle

        assert isinstance(model, Model)
        self.model = model
        net, device, dtype = model.net, model.device, model.dtype
        self.delay_tokens = delay_tokens
        self.prompt_len = 1 + LEFT_PAD_TOKENS + delay_tokens
        self.mel = MelStream(model.logmel)
        self.conv = net.whisper_encoder.new_conv_state(1, dtype, device)
        self.enc_cache = net.whisper_encoder.new_cache(1, dtype, device)
        self.dec_cache = net.decoder.new_cache(1, dtype, device)
        self.ada = model.ada_scales(delay_tokens)  # [n_layers, dim]
        self.n_real = 0  # real samples received
        # Mel frames not yet encoded ([128, f]); starts with the left pad's frames.
        self.mel_pending = self.mel.push(np.zeros(LEFT_PAD_TOKENS * SAMPLES_PER_TOKEN, dtype=np.float32))
        self.audio_embeds: list[torch.Tensor] = []  # [1, dim] each, for positions emb_start...
        self.emb_start = 0  # decoder position of audio_embeds[0]
        self.n_encoded = 0  # audio tokens encoded so far
        self.next_pos = 0  # next decoder position to run
        self.last_id = BOS_ID
        self.limit_tokens: int | None = None  # set by finish(): total padded tokens N
        self.done = False  # EOS generated, or finish() ran to the end
        self.encoder_ms: list[float] = []  # per audio token, since the last read
        self.decoder_ms: list[float] = []  # per decoder position, since the last read
        self.logits_hook: Callable[[torch.Tensor], None] | None = None  # sees [1, vocab] per step (tests)
        # CUDA: single steps replay a captured graph (asr/graphs.py), unless logits are watched.
        self.use_graphs = model.device.type == "cuda" and model.use_cuda_graphs
        self._graph: GraphedDecodeStep | None = None
        self._encoder_graphs: dict[int, GraphedEncodeStep] = {}  # by tokens per call

    @property
    def max_positions(self) -> int:
        return self.model.cfg.decoder.max_positions

    def projected_positions(self, extra_samples: int = 0) -> int:
        """Positions this stream would use if it were finished after ``extra_samples`` more samples."""
        return total_tokens(self.n_real + extra_samples, self.delay_tokens)

    def push(self, samples: np.ndarray) -> list[Step]:
        """Feed real 16 kHz samples [n]; returns the ids generated as a result."""
        if self.done:
            return []
        self.n_real += samples.shape[0]
        return self._advance(self.mel.push(samples))

    def finish(self) -> list[Step]:
        """Append the right pad (plus the window's reach past the end) and run to the last position."""
        if self.done:
            return []
        self.limit_tokens = total_tokens(self.n_real, self.delay_tokens)
        pad = np.zeros(right_pad_samples(self.n_real, self.delay_tokens) + HALF_WINDOW, dtype=np.float32)
        steps = self._advance(self.mel.push(pad))
        self.done = True
        return steps

    def _advance(self, new_frames: torch.Tensor) -> list[Step]:
        mel = torch.cat((self.mel_pending, new_frames), dim=1)  # [128, f]
        n_tokens = mel.shape[1] // FRAMES_PER_TOKEN
        if self.limit_tokens is not None:
            n_tokens = min(n_tokens, self.limit_tokens - self.n_encoded)
        self.mel_pending = mel[:, n_tokens * FRAMES_PER_TOKEN :]
        steps: list[Step] = []
        for start in range(0, n_tokens, MAX_CHUNK_TOKENS):
            count = min(MAX_CHUNK_TOKENS, n_tokens - start)
            chunk = mel[:, (start * FRAMES_PER_TOKEN) : (start + count) * FRAMES_PER_TOKEN]
            self._encode(chunk)
            steps += self._decode()
            if self.done:
                break
        return steps

    @torch.inference_mode()
    def _encode(self, mel: torch.Tensor) -> None:
        """mel [128, 8n] -> n audio embeddings appended to ``audio_embeds``."""
        t0 = time.perf_counter()
        n = mel.shape[1] // FRAMES_PER_TOKEN
        if n <= MAX_GRAPHED_ENCODER_TOKENS and self.use_graphs:
            graph = self._encoder_graphs.get(n)
            if graph is None:
                graph = self._encoder_graphs[n] = GraphedEncodeStep(self.model.net, self.conv, self.enc_cache, n)
            embeds = graph(mel, 4 * self.n_encoded)  # [n, dim]
        else:
            positions = torch.arange(4 * self.n_encoded, 4 * (self.n_encoded + n), device=self.model.device)
            embeds = encode_tokens(self.model.net, mel[None], self.conv, self.enc_cache, positions)[0]  # [n, dim]
        self.model.sync()
        self.encoder_ms += [(time.perf_counter() - t0) * 1000.0 / n] * n
        self.audio_embeds += list(embeds.split(1))
        self.n_encoded += n

    @torch.inference_mode()
    def _decode(self) -> list[Step]:
        """Run every decoder position whose audio embedding is ready."""
        steps: list[Step] = []
        available = self.emb_start + len(self.audio_embeds)
        if self.next_pos == 0:
            if available < self.prompt_len:
                return steps
            prompt = [BOS_ID] + [STREAMING_PAD_ID] * (self.prompt_len - 1)
            steps.append(self._run(prompt, self._take(self.prompt_len)))
        while not self.done and self.next_pos < available:
            steps.append(self._run([self.last_id], self._take(1)))
        return steps

    def _take(self, n: int) -> torch.Tensor:
        embeds = torch.cat(self.audio_embeds[:n])  # [n, dim]
        del self.audio_embeds[:n]
        self.emb_start += n
        return embeds

    def _run(self, ids: list[int], audio: torch.Tensor) -> Step:
        """Decoder positions next_pos .. next_pos + len(ids) - 1; returns the last position's argmax."""
        if len(ids) == 1 and self.use_graphs and self.logits_hook is None:
            return self._run_graphed(ids[0], audio)
        net, device = self.model.net, self.model.device
        t0 = time.perf_counter()
        positions = torch.arange(self.next_pos, self.next_pos + len(ids), device=device)
        tokens = torch.tensor([ids], device=device)  # [1, T]
        x = net.decoder.embed(tokens) + audio[None].to(self.model.dtype)  # [1, T, dim]
        logits = net.decoder(x, positions, self.dec_cache, self.ada)  # [1, vocab]
        if self.logits_hook is not None:  # sees (and in tests may edit) the logits before argmax
            self.logits_hook(logits)
        token = int(logits.argmax(-1)[0])
        self.decoder_ms.append((time.perf_counter() - t0) * 1000.0)
        return self._advance_position(len(ids), token)

    def _run_graphed(self, token_in: int, audio: torch.Tensor) -> Step:
        t0 = time.perf_counter()
        if self._graph is None:
            net = self.model.net
            self._graph = GraphedDecodeStep(net.decoder, self.dec_cache, self.ada, self.next_pos)
        token = self._graph(token_in, audio.to(self.model.dtype), self.next_pos)
        self.decoder_ms.append((time.perf_counter() - t0) * 1000.0)
        return self._advance_position(1, token)

    def _advance_position(self, n: int, token: int) -> Step:
        position = self.next_pos + n - 1
        self.next_pos += n
        self.last_id = token
        if token == EOS_ID:
            self.done = True
        return Step(position, token)
