"""The Hugging Face transformers directory: ``config.json`` + ``*.safetensors`` + ``tekken.json``.

Tensors are read through safetensors' memory map and renamed to canonical names (see names.py).
HF q/k rows are already in the canonical halves order, so nothing is permuted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from asr.config import ModelConfig
from asr.errors import ConfigError, WeightsError
from asr.weights.checkpoint import Checkpoint, dominant_dtype_name
from asr.weights.names import HF_TIED_HEAD, hf_to_canonical


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_hf_dir(path: Path) -> Checkpoint:
    config_path = path / "config.json"
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{config_path}: not readable JSON ({error}); re-download the model") from error
    model_type = raw.get("model_type")
    if model_type != "voxtral_realtime":
        raise ConfigError(
            f"{config_path}: model_type is {model_type!r}, expected 'voxtral_realtime'; "
            "this directory holds a different model"
        )
    config = ModelConfig.from_hf_dict(raw, source=str(config_path))
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise WeightsError(
            f"{path}: no *.safetensors weight files next to config.json; download the model's "
            "safetensors files into this directory"
        )
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for file in files:
        for name, tensor in _read_safetensors(file).items():
            canonical = hf_to_canonical(name)
            if canonical is None:
                if name.endswith(HF_TIED_HEAD) or name == HF_TIED_HEAD:
                    continue  # tied to the embeddings
                raise WeightsError(
                    f"{file}: unexpected tensor {name!r} for Voxtral Realtime; wrong checkpoint?"
                )
            if canonical in tensors:
                raise WeightsError(f"{file}: tensor {name!r} also appears in {origin[canonical]}")
            tensors[canonical] = tensor
            origin[canonical] = file.name
    return Checkpoint(
        config=config,
        tensors=tensors,
        tokenizer=path / "tekken.json",
        format="hf",
        quant=dominant_dtype_name(tensors),
        path=path,
    )


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{file}: not a readable safetensors file ({error}); re-download it") from error
