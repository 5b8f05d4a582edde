"""Encoder -> adapter -> decoder wiring, and the public :class:`Model` returned by :func:`load_model`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asr.config import ModelConfig
from asr.decoder import TextDecoder
from asr.encoder import Adapter, AudioEncoder


class VoxtralRealtime(nn.Module):
    """The whole network. Parameter names equal the original checkpoint's, minus its long prefix:
    ``whisper_encoder.*``, ``audio_language_projection.*``, ``tok_embeddings.weight``,
    ``layers.N.*``, ``norm.weight`` (see ``asr/weights/names.py``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.whisper_encoder = AudioEncoder(cfg.encoder)
        self.audio_language_projection = Adapter(cfg)
        self.decoder = TextDecoder(cfg.decoder)

    # The decoder's modules live at the top level of the checkpoint's namespace.
    @staticmethod
    def canonical_name(module_path: str) -> str:
        """Attribute path in this module tree -> canonical tensor name."""
        return module_path.removeprefix("decoder.")

    @staticmethod
    def module_path(canonical: str) -> str:
        """Canonical tensor name -> attribute path in this module tree."""
        if canonical.startswith(("whisper_encoder.", "audio_language_projection.")):
            return canonical
        return "decoder." + canonical


@dataclass(frozen=True)
class ModelInfo:
    name: str  # directory or file name of the checkpoint
    format: str  # "hf", "consolidated", "gguf-trevors", "gguf-transcribe-cpp", "random"
    quant: str  # "bf16", "f32", "q4_k_m", ... (the file's weight type; "mixed" when several)
    device: str
    dtype: str  # compute dtype
    n_params: int
    weight_bytes: int  # bytes the weights occupy where they live (packed size for quantized ones)
    path: Path | None = None


def count_parameters(cfg: ModelConfig) -> int:
    """Parameters of the configuration, from shapes alone (4 429 679 360 for the published model)."""
    with torch.device("meta"):
        net = VoxtralRealtime(cfg)
    return sum(p.numel() for p in net.parameters())
