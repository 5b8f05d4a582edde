"""Prepare a loaded network for speed: fuse projections, then give quantized layers fast forms.

* q, k, v become one ``wqkv`` and SwiGLU's w1, w3 one ``w13`` (performance.md §6.6: one weight
  read and one launch instead of three or two). Rows are concatenated, which is exact for dense
  weights and for packed GGUF rows alike (every row is its own run of blocks). Projections of
  different storage types (a Q6_K wv beside Q4_K wq and wk, say) stay separate.
* Every ``QLinear`` becomes the fastest exact-code form for its device (asr/quant/fast.py); the
  tied embedding keeps the ability to look up rows. Plain ``nn.Linear`` layers become
  ``DenseLinear`` (the same weight), whose single-row calls use the dense GEMV on CUDA, or on CPU
  in bf16 ``PackedLinear`` (the same weight packed for oneDNN, the same products).

Fused modules remember their parts (``parts``: name, output size, whether it had a bias) so
the reference bridge can split them again.
"""

from __future__ import annotations

import torch
from torch import nn

from asr.decoder import QuantizedTiedEmbedding
from asr.layers import CachedAttention, SwiGLU
from asr.quant import QLinear, QuantizedTensor
from asr.quant.fast import dense_form, fast_linear


def accelerate(net: nn.Module) -> None:
    """Fuse projections and repack quantized weights, in place."""
    for module in list(net.modules()):
        if isinstance(module, CachedAttention):
            _fuse(module, "wqkv", ("wq", "wk", "wv"))
        elif isinstance(module, SwiGLU):
            _fuse(module, "w13", ("w1", "w3"))
    for module in list(net.modules()):
        if isinstance(module, QuantizedTiedEmbedding):
            module.linear = fast_linear(module.linear, keep_rows=True)
            continue
        for name, child in list(module.named_children()):
            if isinstance(child, QLinear):
                fast = fast_linear(child)
                fast.parts = getattr(child, "parts", None)
                setattr(module, name, fast)
            elif type(child) is nn.Linear:
                bias = None if child.bias is None else child.bias.data
                setattr(module, name, dense_form(child.weight.data, bias))


def _fuse(module: nn.Module, fused_name: str, names: tuple[str, ...]) -> None:
    layers = [getattr(module, n) for n in names]
    fused = _concat_rows(layers)
    if fused is None:
        return
    fused.parts = [(n, layer.out_features, layer.bias is not None) for n, layer in zip(names, layers, strict=True)]
    for n in names:
        delattr(module, n)
    setattr(module, fused_name, fused)


def _concat_rows(layers: list[nn.Module]) -> nn.Module | None:
    """One layer computing ``[layer_0(x) | layer_1(x) | ...]``, or None when they cannot share storage."""
    biases = [layer.bias for layer in layers]
    if any(b is not None for b in biases):
        dtype = _bias_dtype(layers)
        biases = [b if b is not None else torch.zeros(layer.out_features, dtype=dtype, device=_device(layer))
                  for b, layer in zip(biases, layers, strict=True)]  # fmt: skip
        bias = torch.cat([b.to(dtype) for b in biases])
    else:
        bias = None
    if all(type(layer) is nn.Linear for layer in layers):
        weights = [layer.weight for layer in layers]
        if len({(w.dtype, w.device) for w in weights}) != 1:
            return None
        return dense_form(torch.cat([w.data for w in weights]), bias)
    if all(isinstance(layer, QLinear) for layer in layers):
        qweights = [layer.qweight for layer in layers]
        if len({(q.qtype.ggml_id, q.shape[1], q.device) for q in qweights}) != 1:
            return None
        rows = sum(q.shape[0] for q in qweights)
        packed = QuantizedTensor(torch.cat([q.data for q in qweights]), qweights[0].qtype, (rows, qweights[0].shape[1]))
        return QLinear(packed, bias, layers[0].compute_dtype)
    return None


def _bias_dtype(layers: list[nn.Module]) -> torch.dtype:
    layer = layers[0]
    return layer.compute_dtype if isinstance(layer, QLinear) else layer.weight.dtype


def _device(layer: nn.Module) -> torch.device:
    return layer.qdata.device if isinstance(layer, QLinear) else layer.weight.device
