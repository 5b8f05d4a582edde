"""Mistral's original directory: ``consolidated.safetensors`` + ``params.json`` + ``tekken.json``.

The safetensors file is parsed here (8-byte header length, JSON header, raw data) over a private
memory map, so every tensor is a zero-copy view and every malformed header ends in a one-line
WeightsError naming the file and tensor. Names lose the ``mm_streams_embeddings.embedding_module.``
prefix; q/k rows (and the encoder q bias) are permuted from the interleaved to the NeoX layout.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import torch

from asr.errors import ConfigError, WeightsError
from asr.weights.checkpoint import Checkpoint, dominant_dtype_name
from asr.weights.gguf_common import (
    Weight,
    config_from_params_json,
    model_config,
    tekken_beside,
    validate_canonical,
)
from asr.weights.gguf_names import neox_from_interleaved, original_to_canonical

FORMAT_CONSOLIDATED = "consolidated"
WEIGHTS_FILE = "consolidated.safetensors"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors spec's own limit
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def is_consolidated_dir(path: Path) -> bool:
    """A directory holding Mistral's ``consolidated.safetensors`` and ``params.json``."""
    return path.is_dir() and (path / WEIGHTS_FILE).is_file() and (path / "params.json").is_file()


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file as a zero-copy view of a private memory map."""
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                raise WeightsError(f"{file} is truncated ({size} bytes); download it again")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    except OSError as error:
        raise WeightsError(f"cannot read {file}: {error.strerror or error}") from None
    (header_len,) = struct.unpack_from("<Q", mapped, 0)
    if header_len > min(MAX_HEADER_BYTES, size - 8):
        raise WeightsError(f"{file} is truncated or not a safetensors file (header of {header_len} "
                           "bytes in a "
                           f"{size}-byte file); download it again")
    try:
        header = json.loads(bytes(mapped[8 : 8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{file} has a corrupt safetensors header ({error}); download it again") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{file} has a corrupt safetensors header (not a JSON object)")
    base = 8 + header_len
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _view(mapped, file, name, entry, base, size)
    return tensors


def _view(mapped: mmap.mmap, file: Path, name: str, entry: object, base: int, size: int) -> torch.Tensor:
    try:
        dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]  # type: ignore[index]
        shape = [int(s) for s in shape]
        begin, end = int(begin), int(end)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise WeightsError(f"{file}: tensor {name} has a malformed header entry {str(entry)[:200]}") from None
    if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
        raise WeightsError(f"{file}: tensor {name} has dtype {dtype_name}; voxcap reads F32, F16 and "
                           "BF16 here")
    dtype = _DTYPES[dtype_name]
    nbytes = math.prod(shape) * dtype.itemsize
    if any(s < 0 for s in shape) or end - begin != nbytes or begin < 0 or base + end > size:
        raise WeightsError(f"{file}: tensor {name} ({dtype_name} {shape}) has data offsets [{begin}, {end}) "
                           f"that do not fit its size or the file ({size} bytes); download it again")
    raw = torch.frombuffer(mapped, dtype=torch.uint8, count=nbytes, offset=base + begin) if nbytes \
        else torch.empty(0, dtype=torch.uint8)
    if (base + begin) % dtype.itemsize:
        raw = raw.clone()  # misaligned for a typed view (never the case for files safetensors writes)
    return raw.view(dtype).reshape(shape)


def load_consolidated_dir(path: str | Path, tokenizer: str | Path | None = None) -> Checkpoint:
    """Read Mistral's original directory into canonical names and the NeoX q/k layout."""
    path = Path(path).expanduser()
    params_path = path / "params.json"
    try:
        params = json.loads(params_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} has no params.json; put the model's params.json beside "
                          f"{WEIGHTS_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{params_path}: not readable JSON ({error}); re-download it") from None
    cfg = model_config(config_from_params_json(params, str(params_path)), str(params_path))
    file = path / WEIGHTS_FILE
    tensors: dict[str, Weight] = {}
    file_names: dict[str, str] = {}
    for name, tensor in read_safetensors(file).items():
        canonical = original_to_canonical(name)
        if canonical in tensors:
            raise WeightsError(f"{file} holds tensor {canonical} twice ({file_names[canonical]} and {name})")
        tensors[canonical] = tensor
        file_names[canonical] = name
    validate_canonical(tensors, cfg, file, file_names)
    tensors = {name: neox_from_interleaved(name, t, cfg) for name, t in tensors.items()}
    tok = tekken_beside(path, tokenizer, "model directory")
    return Checkpoint(config=cfg, tensors=tensors, tokenizer=tok, format=FORMAT_CONSOLIDATED,
                      quant=dominant_dtype_name(tensors), path=path)
