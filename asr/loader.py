"""``load_model``: read a checkpoint of any supported format and build the network on a device.

The network is built on the meta device (no memory), then each canonical tensor is moved into
place: float tensors converted to the compute dtype, quantized ones kept packed (``QLinear``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from asr.config import ModelConfig
from asr.errors import AsrError, ConfigError
from asr.model import ModelInfo, VoxtralRealtime
from asr.runtime import Model
from asr.weights import Checkpoint, read_checkpoint

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16, "half": torch.float16,
}  # fmt: skip


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
        raise ConfigError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not supported; use float32, bfloat16 or float16") from None


def load_model(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: str | Path | None = None,
    dequantize: bool = False,
    fast: bool = True,
) -> Model:
    """Load a Voxtral Realtime checkpoint (any supported format) for streaming transcription.

    ``device`` None picks CUDA when present; ``dtype`` None means bfloat16. ``tokenizer`` points
    at a ``tekken.json`` when the checkpoint has none beside it. ``fast`` (the default) fuses the
    projections and repacks quantized weights for the fast kernels, keeping their integer codes
    (asr/fuse.py); ``fast=False`` keeps the reference path: separate projections, quantized
    weights dequantized on every call. ``dequantize`` expands quantized weights once, at load,
    to ``dtype``.
    """
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    checkpoint = read_checkpoint(path, tokenizer)
    if dequantize:
        checkpoint.tensors = {name: _dense(t, dtype, device) for name, t in checkpoint.tensors.items()}
    return build_model(checkpoint, device, dtype, tokenizer, fast=fast)


def _dense(tensor: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(tensor, torch.Tensor):
        return tensor
    return tensor.to(device).dequantize(dtype)  # exact values, rounded once to the compute dtype


def load_random_model(
    quant: str = "bf16",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    config: ModelConfig | None = None,
    seed: int = 0,
    fast: bool = True,
) -> Model:
    """Full-size (or ``config``-sized) random weights stored as ``quant``: for benchmarks."""
    from asr.weights.random import random_checkpoint

    device, dtype = resolve_device(device), resolve_dtype(dtype)
    checkpoint = random_checkpoint(config or ModelConfig(), quant, device, seed)
    return build_model(checkpoint, device, dtype, fast=fast)


def build_model(
    checkpoint: Checkpoint,
    device: torch.device,
    dtype: torch.dtype,
    tokenizer: str | Path | None = None,
    fast: bool = True,
) -> Model:
    tok = _load_tokenizer(tokenizer or checkpoint.tokenizer, checkpoint.config.decoder.vocab_size)
    with torch.device("meta"):
        net = VoxtralRealtime(checkpoint.config)
    weight_bytes = 0
    # Float tensors first (popped from the end), so a quantized Linear can take over its (float)
    # bias when swapped in. The tensors move into the network: the checkpoint keeps none, so the
    # fast path below frees each original once it has packed or fused it (peak memory: one copy,
    # not two).
    items = sorted(checkpoint.tensors.items(), key=lambda kv: isinstance(kv[1], torch.Tensor))
    checkpoint.tensors.clear()
    while items:
        name, value = items.pop()
        weight_bytes += _place(net, VoxtralRealtime.module_path(name), value, device, dtype)
        del value
    leftover = [n for n, p in net.named_parameters() if p.is_meta]
    if leftover:
        raise AsrError(f"internal error: parameters {leftover[:3]} were not loaded")
    net.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in net.parameters()) + _packed_params(net)
    if fast:
        from asr.fuse import accelerate

        accelerate(net)
        weight_bytes = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    path = checkpoint.path
    info = ModelInfo(
        name=path.name if path else "random",
        format=checkpoint.format,
        quant=checkpoint.quant,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        n_params=n_params,
        weight_bytes=weight_bytes,
        path=path,
    )
    return Model(net, tok, info, device, dtype)


def _place(net: nn.Module, path: str, value: Any, device: torch.device, dtype: torch.dtype) -> int:
    """Put one tensor into the meta-built network; returns the bytes it occupies there."""
    module_path, _, attr = path.rpartition(".")
    module = net.get_submodule(module_path)
    if isinstance(value, torch.Tensor):
        tensor = value.to(device=device, dtype=dtype)
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
        return tensor.numel() * tensor.element_size()
    # A quantized matrix stays packed: swap the Linear (or embedding) for its quantized twin.
    from asr.decoder import QuantizedTiedEmbedding, TiedEmbedding
    from asr.quant import QLinear

    parent_path, _, child = module_path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    if isinstance(module, TiedEmbedding):
        parent._modules[child] = QuantizedTiedEmbedding(value.to(device), dtype)
    elif isinstance(module, nn.Linear) and attr == "weight":
        bias = module.bias if module.bias is not None and not module.bias.is_meta else None
        parent._modules[child] = QLinear(value.to(device), bias, dtype)
    else:
        raise AsrError(f"internal error: no quantized form for {path}")
    return int(value.nbytes)


def _packed_params(net: nn.Module) -> int:
    """Weights that quantized modules hold as buffers (packed matrices and their biases)."""
    from asr.quant import QLinear

    return sum(m.n_packed_params + (m.bias.numel() if m.bias is not None else 0)
               for m in net.modules() if isinstance(m, QLinear))  # fmt: skip


def _load_tokenizer(source: Any, vocab_size: int) -> Any:
    """A tekken.json path, or a vocabulary embedded in a GGUF file (an object with ``tokens``)."""
    from asr.tokenizer import TekkenTokenizer

    if isinstance(source, TekkenTokenizer):
        return source
    if isinstance(source, (str, Path)):
        return TekkenTokenizer.from_file(source, vocab_size=vocab_size)
    return TekkenTokenizer.from_embedded(source.tokens, getattr(source, "token_types", None), vocab_size=vocab_size)
