"""GGUF quantized weights: type registry, packed tensors and a quantized linear layer."""

from asr.quant.linear import QLinear
from asr.quant.tensor import QuantizedTensor
from asr.quant.types import QUANT_TYPES, QUANT_TYPES_BY_NAME, QuantType, ggml_type_name, quant_type

__all__ = [
    "QUANT_TYPES",
    "QUANT_TYPES_BY_NAME",
    "QLinear",
    "QuantType",
    "QuantizedTensor",
    "ggml_type_name",
    "quant_type",
]
