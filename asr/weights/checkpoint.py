"""The result of reading any checkpoint format: config, canonical tensors, tokenizer source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from asr.config import ModelConfig
from asr.errors import WeightsError
from asr.quant.tensor import QuantizedTensor

Weight = torch.Tensor | QuantizedTensor

_DTYPE_NAMES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


@dataclass
class Checkpoint:
    """Canonical tensors (names of names.py, q/k rows in the NeoX halves order) and their config."""

    config: ModelConfig
    tensors: dict[str, Weight]
    tokenizer: object  # a tekken.json Path, or an EmbeddedVocab read from a GGUF
    format: str  # "hf", "consolidated", "gguf-trevors", "gguf-transcribe-cpp"
    quant: str  # "bf16", "f32", "q4_0", "q4_k_m", ...
    path: Path | None

    def validate(self) -> None:
        """Exactly the tensors the config describes, with the right shapes, or a WeightsError."""
        from asr.weights.names import expected_shapes

        expected = expected_shapes(self.config)
        where = self.path if self.path is not None else "checkpoint"
        missing = sorted(set(expected) - set(self.tensors))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise WeightsError(
                f"{where}: tensor {missing[0]} is missing{more}; the checkpoint is incomplete "
                "or not Voxtral Realtime"
            )
        extra = sorted(set(self.tensors) - set(expected))
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise WeightsError(
                f"{where}: unexpected tensor {extra[0]}{more}; the config and the weights "
                "disagree (layer count?) or this is another model"
            )
        for name, shape in expected.items():
            got = tuple(self.tensors[name].shape)
            if got != shape:
                raise WeightsError(
                    f"{where}: tensor {name} has shape {list(got)}, the config needs {list(shape)}"
                )


def dominant_dtype_name(tensors: dict[str, Weight]) -> str:
    """The storage type holding the most bytes ("bf16", "f32", "q4_k", ...)."""
    by_bytes: Counter[str] = Counter()
    for tensor in tensors.values():
        if isinstance(tensor, QuantizedTensor):
            by_bytes[tensor.qtype.name.lower()] += tensor.nbytes
        else:
            name = _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype))
            by_bytes[name] += tensor.numel() * tensor.element_size()
    return by_bytes.most_common(1)[0][0] if by_bytes else "none"
