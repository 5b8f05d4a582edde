"""The public :class:`Model`: a loaded network with its tokenizer, ready to open streams."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from asr.audio import SAMPLE_RATE, SAMPLES_PER_TOKEN, LogMel
from asr.config import ModelConfig
from asr.model import ModelInfo, VoxtralRealtime
from asr.stream import DEFAULT_DELAY_MS, StreamingSession, delay_tokens_for, prompt_samples


class Model:
    def __init__(
        self,
        net: VoxtralRealtime,
        tokenizer: object,
        info: ModelInfo,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.net = net
        self.cfg: ModelConfig = net.cfg
        self.tokenizer = tokenizer
        self.info = info
        self.device = device
        self.dtype = dtype
        self.logmel = LogMel(device)
        self._ada_cache: dict[int, torch.Tensor] = {}
        self.use_cuda_graphs = True  # replay decoder steps from CUDA graphs (no effect on CPU)

    def stream(self, delay_ms: int = DEFAULT_DELAY_MS) -> StreamingSession:
        """A new streaming session (80..2400 ms delay, multiple of 80)."""
        delay_tokens_for(delay_ms)  # validate before building anything
        return StreamingSession(self, delay_ms)

    @torch.inference_mode()
    def ada_scales(self, delay_tokens: int) -> torch.Tensor:
        """[n_layers, dim] FFN scales for a delay, computed once per delay value."""
        if delay_tokens not in self._ada_cache:
            self._ada_cache[delay_tokens] = self.net.decoder.ada_scales(delay_tokens)
        return self._ada_cache[delay_tokens]

    @property
    def needs_warm_up(self) -> bool:
        """Whether the first stream prepares work lazily (CUDA: kernel autotuning, Triton compiles,
        cuBLAS setup), so that :meth:`warm_up` before live audio pays off. On CPU nothing is."""
        return self.device.type == "cuda"

    def warm_up(self, delay_ms: int = DEFAULT_DELAY_MS, tokens: int = 25, chunk_ms: int = 80) -> None:
        """Stream noise through a throwaway session: the prompt, then ``tokens`` steps, in feeds of
        ``chunk_ms`` as a live source delivers them.

        On CUDA the first stream of a process autotunes every Triton kernel for the shapes it
        meets and builds the kernels missing from Triton's disk cache: seconds with a warm cache,
        over a minute on a fresh machine. Done here, that happens while the app says it is
        loading, instead of on the first live audio (whose queue holds 10 s by default). The
        session is dropped afterwards; it changes no state a later stream reads.
        """
        rng = np.random.default_rng(0)
        samples = prompt_samples(delay_ms) + tokens * SAMPLES_PER_TOKEN
        audio = (rng.standard_normal(samples) * 0.05).astype(np.float32)
        chunk = chunk_ms * SAMPLE_RATE // 1000
        session = self.stream(delay_ms)
        for start in range(0, samples, chunk):
            session.feed(audio[start : start + chunk])
        session.finish()

    def sync(self) -> None:
        """Wait for queued GPU work, so step timings are real (no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Model({i.name}, {i.format}/{i.quant}, {i.device}, {i.dtype}, {i.n_params / 1e9:.2f} B params)"
        )


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    return torch.cuda.is_available()
