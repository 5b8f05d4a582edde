"""Checkpoint formats. ``read_checkpoint(path)`` detects the format and returns a :class:`Checkpoint`.

One module per format, each mapping its names and layout to the canonical ones (names.py):
``hf`` (transformers directory), ``consolidated`` (Mistral's original directory) and ``gguf``
(the transcribe.cpp and voxtral-mini-realtime-rs families).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from asr.errors import ModelNotFound, UnsupportedFormat
from asr.weights.checkpoint import Checkpoint
from asr.weights.consolidated import is_consolidated_dir, load_consolidated_dir
from asr.weights.gguf_model import load_gguf
from asr.weights.gguf_reader import is_gguf
from asr.weights.hf import is_hf_dir, load_hf_dir

# (name, detector, loader(path, tokenizer)) in order of precedence. Mistral's original directory
# wins over the transformers one when a download holds both (the hub repo ships both sets).
_FORMATS: list[tuple[str, Callable[[Path], bool], Callable[[Path, Path | None], Checkpoint]]] = [
    ("consolidated", is_consolidated_dir, load_consolidated_dir),
    ("hf", is_hf_dir, lambda path, _tokenizer: load_hf_dir(path)),
    ("gguf", lambda p: p.is_file() and is_gguf(p), load_gguf),
]


def read_checkpoint(path: str | Path, tokenizer: str | Path | None = None) -> Checkpoint:
    """Detect the format of ``path`` and load it (``tokenizer``: a tekken.json for files without one)."""
    path = Path(path).expanduser()
    tokenizer = Path(tokenizer).expanduser() if tokenizer is not None else None
    if not path.exists():
        raise ModelNotFound(
            f"no model at {path}; pass a model directory or .gguf file, or a known model name "
            "(see `voxcap models`)"
        )
    for _name, detect, load in _FORMATS:
        if detect(path):
            checkpoint = load(path, tokenizer)
            checkpoint.validate()
            return checkpoint
    raise UnsupportedFormat(
        f"{path}: not a known Voxtral Realtime checkpoint (expected a transformers directory with "
        "config.json, Mistral's consolidated.safetensors + params.json, or a .gguf file)"
    )


__all__ = ["Checkpoint", "read_checkpoint"]
