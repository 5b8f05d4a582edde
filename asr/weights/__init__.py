"""Checkpoint formats. ``read_checkpoint(path)`` detects the format and returns a :class:`Checkpoint`.

One module per format, each mapping its names and layout to the canonical ones (names.py):
``hf`` (transformers directory); the original Mistral directory and the GGUF families are added
by their own modules and registered in ``_FORMATS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from asr.errors import ModelNotFound, UnsupportedFormat
from asr.weights.checkpoint import Checkpoint
from asr.weights.hf import is_hf_dir, load_hf_dir

# (name, detector, loader) in order of precedence.
_FORMATS: list[tuple[str, Callable[[Path], bool], Callable[[Path], Checkpoint]]] = [
    ("hf", is_hf_dir, load_hf_dir),
]


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFound(
            f"no model at {path}; pass a model directory or .gguf file, or a known model name "
            "(see `voxcap models`)"
        )
    for _name, detect, load in _FORMATS:
        if detect(path):
            checkpoint = load(path)
            checkpoint.validate()
            return checkpoint
    raise UnsupportedFormat(
        f"{path}: not a known Voxtral Realtime checkpoint (expected a transformers directory with "
        "config.json, Mistral's consolidated.safetensors + params.json, or a .gguf file)"
    )


__all__ = ["Checkpoint", "read_checkpoint"]
