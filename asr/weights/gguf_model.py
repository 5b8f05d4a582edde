"""Load a Voxtral Realtime GGUF of either published family into a canonical :class:`Checkpoint`.

* transcribe.cpp (``general.architecture = voxtral_realtime``): its own tensor names (``enc.*``,
  ``dec.*``, ``proj.*``), q/k already in the NeoX layout, hyper-parameters in
  ``stt.voxtral_realtime.*`` metadata, the vocabulary embedded (``tokenizer.ggml.*``).
* voxtral-mini-realtime-rs by TrevorS (``voxtral-q4.gguf``): Mistral's original names and
  interleaved q/k layout (permuted here), no useful metadata; hyper-parameters from a
  ``params.json`` beside the file, else the published ones checked against the tensor shapes;
  ``tekken.json`` beside the file.

The family is told apart by the tensor names; a file mixing both naming schemes has no
determinable q/k layout and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from asr.errors import ConfigError, TokenizerError, UnsupportedFormat, WeightsError
from asr.quant.tensor import QuantizedTensor
from asr.weights.checkpoint import Checkpoint, dominant_dtype_name
from asr.weights.gguf_common import (
    EmbeddedVocab,
    Weight,
    config_from_params_json,
    model_config,
    published_config,
    tekken_beside,
    validate_canonical,
)
from asr.weights.gguf_names import (
    TRANSCRIBE_CPP_AUXILIARY,
    canonical_to_transcribe_cpp,
    neox_from_interleaved,
    original_to_canonical,
    transcribe_cpp_to_canonical,
)
from asr.weights.gguf_reader import GGUFFile

TRANSCRIBE_CPP_ARCH = "voxtral_realtime"
FORMAT_TRANSCRIBE_CPP = "gguf-transcribe-cpp"
FORMAT_TREVORS = "gguf-trevors"
_ORIGINAL_STARTS = ("whisper_encoder.", "layers.", "audio_language_projection.", "tok_embeddings.",
                    "norm.weight", "output.weight")
_TC_STARTS = ("enc.", "dec.", "proj.", "frontend.")
_M = "stt.voxtral_realtime."


def load_gguf(path: str | Path, tokenizer: str | Path | None = None) -> Checkpoint:
    """Read a Voxtral Realtime GGUF (either family); tensors stay memory-mapped and quantized.

    ``tokenizer``: a ``tekken.json`` to use for a TrevorS file instead of the one beside it.
    """
    path = Path(path).expanduser()
    gguf = GGUFFile(path)
    family = gguf_family(gguf)
    arch = gguf.get("general.architecture")
    if family == FORMAT_TRANSCRIBE_CPP:
        if not _same(arch, TRANSCRIBE_CPP_ARCH):
            raise WeightsError(f"GGUF file {path} has general.architecture {arch!r}; transcribe.cpp Voxtral "
                               f"Realtime files say {TRANSCRIBE_CPP_ARCH!r}: this is another model")
        return _load_transcribe_cpp(gguf)
    if arch is not None and (not isinstance(arch, str) or "voxtral" not in arch.lower()):
        raise WeightsError(f"GGUF file {path} has general.architecture {arch!r}, not a Voxtral model")
    return _load_trevors(gguf, tokenizer)


def gguf_family(gguf: GGUFFile) -> str:
    """``gguf-transcribe-cpp`` or ``gguf-trevors`` from the tensor names, or an error."""
    names = list(gguf.tensors)
    tc = [n for n in names if n.startswith(_TC_STARTS)]
    original = [n for n in names if original_to_canonical(n).startswith(_ORIGINAL_STARTS)]
    if tc and original:
        raise WeightsError(f"GGUF file {gguf.path}: cannot determine the q/k RoPE layout: it mixes "
                           f"transcribe.cpp tensor names ({tc[0]}) with Mistral's original names "
                           f"({original[0]}); re-download or re-convert the file")
    if tc:
        return FORMAT_TRANSCRIBE_CPP
    if original:
        return FORMAT_TREVORS
    example = names[0] if names else "none"
    raise UnsupportedFormat(f"GGUF file {gguf.path} is not a Voxtral Realtime checkpoint (tensor names like "
                            f"{example}); use a transcribe.cpp or voxtral-mini-realtime-rs GGUF")


# -- transcribe.cpp ----------------------------------------------------------------------------


def _same(value: object, expected: object) -> bool:
    """``value == expected`` for a metadata value of any type (arrays and other types compare unequal)."""
    if isinstance(value, bool) != isinstance(expected, bool) or type(value) is not type(expected):
        return False
    return bool(value == expected)


def _meta(gguf: GGUFFile, key: str, kind: type, default: object = None) -> object:
    value = gguf.get(key, default)
    if value is None:
        raise ConfigError(f"GGUF file {gguf.path} lacks metadata key {key}; it was not written by "
                          "transcribe.cpp's Voxtral Realtime converter, or is damaged")
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ConfigError(f"GGUF file {gguf.path}: metadata key {key} is {value!r}, expected {kind.__name__}")
    return value


def transcribe_cpp_config(gguf: GGUFFile) -> dict:
    """The HF-shaped config from ``stt.voxtral_realtime.*`` metadata."""
    config = published_config()
    a, t = config["audio_config"], config["text_config"]

    def i(key: str, default: object = None) -> int:
        return int(_meta(gguf, _M + key, int, default))  # type: ignore[arg-type]

    def f(key: str) -> float:
        return float(_meta(gguf, _M + key, float))  # type: ignore[arg-type]

    a.update(num_hidden_layers=i("encoder.n_layers"), hidden_size=i("encoder.d_model"),
             num_attention_heads=i("encoder.n_heads"), num_key_value_heads=i("encoder.n_kv_heads"),
             head_dim=i("encoder.head_dim"), intermediate_size=i("encoder.ffn_dim"),
             num_mel_bins=i("encoder.num_mel_bins"), sliding_window=i("encoder.sliding_window"),
             max_position_embeddings=i("encoder.max_position_embeddings", 1500),
             rms_norm_eps=f("encoder.rms_norm_eps"))
    a["rope_parameters"]["rope_theta"] = f("encoder.rope_theta")
    t.update(num_hidden_layers=i("decoder.n_layers"), hidden_size=i("decoder.hidden_size"),
             intermediate_size=i("decoder.intermediate_size"), num_attention_heads=i("decoder.n_heads"),
             num_key_value_heads=i("decoder.n_kv_heads"), head_dim=i("decoder.head_dim"),
             sliding_window=i("decoder.sliding_window"), vocab_size=i("decoder.vocab_size"),
             max_position_embeddings=i("decoder.max_position_embeddings", 131072),
             rms_norm_eps=f("decoder.rms_norm_eps"))
    t["rope_parameters"]["rope_theta"] = f("decoder.rope_theta")
    config["downsample_factor"] = i("projector.downsample_factor", 4)
    config["audio_length_per_tok"] = i("projector.audio_length_per_tok", 8)
    config["default_num_delay_tokens"] = i("time.default_num_delay_tokens", 6)
    if a["num_key_value_heads"] != a["num_attention_heads"]:
        raise ConfigError(f"GGUF file {gguf.path}: {_M}encoder.n_kv_heads ({a['num_key_value_heads']}) "
                          "differs "
                          f"from n_heads ({a['num_attention_heads']}); the Voxtral encoder is multi-head")
    for key, expected in (("encoder.hidden_act", "silu"), ("decoder.hidden_act", "silu"),
                          ("projector.hidden_act", "gelu")):
        value = gguf.get(_M + key, expected)
        if not _same(value, expected):
            raise ConfigError(f"GGUF file {gguf.path}: {_M}{key} is {value!r}; Voxtral Realtime uses "
                              f"{expected}")
    if not _same(gguf.get(_M + "time.ada_hidden", 32), 32):
        raise ConfigError(f"GGUF file {gguf.path}: {_M}time.ada_hidden is "
                          f"{gguf.get(_M + 'time.ada_hidden')}; "
                          "voxcap supports the published 32")
    if not _same(gguf.get(_M + "decoder.tie_word_embeddings", True), True):
        raise ConfigError(f"GGUF file {gguf.path}: {_M}decoder.tie_word_embeddings is not true; Voxtral "
                          "Realtime ties its output head to the embeddings")
    return config


def embedded_vocab(gguf: GGUFFile, vocab_size: int) -> EmbeddedVocab:
    """The ``tokenizer.ggml.*`` vocabulary, checked against the model's vocabulary size."""
    tokens = gguf.get("tokenizer.ggml.tokens")
    types = gguf.get("tokenizer.ggml.token_type")
    where = f"GGUF file {gguf.path}"
    if not isinstance(tokens, list) or not all(isinstance(x, str) for x in tokens):
        raise TokenizerError(f"{where} has no string array tokenizer.ggml.tokens; transcribe.cpp files embed "
                             "their vocabulary: re-download the file")
    if len(tokens) != vocab_size:
        raise TokenizerError(f"{where}: tokenizer.ggml.tokens has {len(tokens)} entries but the model's "
                             f"vocabulary is {vocab_size}; the file is inconsistent")
    if types is None:
        types = [3 if i < 1000 else 1 for i in range(len(tokens))]
    elif isinstance(types, np.ndarray) and types.dtype.kind in "iu":
        types = types.tolist()
    if not isinstance(types, list) or len(types) != len(tokens) or not all(isinstance(x, int) for x in types):
        raise TokenizerError(f"{where}: tokenizer.ggml.token_type is not an integer array of {len(tokens)} "
                             "entries")
    model = gguf.get("tokenizer.ggml.model", "gpt2")
    if not _same(model, "gpt2"):
        raise TokenizerError(f"{where}: tokenizer.ggml.model is {model!r}; voxcap reads the gpt2 "
                             "byte-level form")

    def token_id(key: str, default: int | None) -> int | None:
        value = gguf.get(f"tokenizer.ggml.{key}", default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(tokens):
            raise TokenizerError(f"{where}: tokenizer.ggml.{key} is {value!r}, not a token id below "
                                 f"{len(tokens)}")
        return value

    merges = gguf.get("tokenizer.ggml.merges", [])
    pre = gguf.get("tokenizer.ggml.pre")
    stream_pad = gguf.get(_M + "streaming_pad_token_id", 32)
    return EmbeddedVocab(
        tokens=tokens, token_types=types,
        bos_id=token_id("bos_token_id", 1) or 0, eos_id=token_id("eos_token_id", 2) or 0,
        unk_id=token_id("unknown_token_id", None), pad_id=token_id("padding_token_id", None),
        streaming_pad_id=stream_pad if isinstance(stream_pad, int) else None,
        merges=merges if isinstance(merges, list) else [], pre=pre if isinstance(pre, str) else None,
    )


def _quant_label(gguf: GGUFFile, tensors: Mapping[str, Weight]) -> str:
    from gguf import LlamaFileType

    file_type = gguf.get("general.file_type")
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
        except ValueError:
            pass
    return dominant_dtype_name(dict(tensors))


def _load_transcribe_cpp(gguf: GGUFFile) -> Checkpoint:
    config = transcribe_cpp_config(gguf)
    cfg = model_config(config, f"GGUF file {gguf.path} (stt.voxtral_realtime.* metadata)")
    tensors: dict[str, Weight] = {}
    file_names: dict[str, str] = {}
    for name in gguf.tensors:
        if name in TRANSCRIBE_CPP_AUXILIARY:
            continue
        canonical = transcribe_cpp_to_canonical(name)
        if canonical is None:
            raise WeightsError(f"GGUF file {gguf.path} has unexpected tensor {name}, which Voxtral Realtime "
                               "does not have; the file is from another model or converter")
        tensors[canonical] = _as_loaded(gguf, name)
        file_names[canonical] = name
    validate_canonical(tensors, cfg, gguf.path, file_names, canonical_to_transcribe_cpp)
    vocab = embedded_vocab(gguf, cfg.decoder.vocab_size)
    return Checkpoint(config=cfg, tensors=tensors, tokenizer=vocab, format=FORMAT_TRANSCRIBE_CPP,
                      quant=_quant_label(gguf, tensors), path=gguf.path)


# -- TrevorS -----------------------------------------------------------------------------------


def _load_trevors(gguf: GGUFFile, tokenizer: str | Path | None) -> Checkpoint:
    params_path = gguf.path.parent / "params.json"
    if params_path.is_file():
        try:
            params = json.loads(params_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{params_path}: not readable JSON ({error}); re-download it") from None
        config = config_from_params_json(params, str(params_path))
        source = str(params_path)
    else:
        config, source = published_config(), "published Voxtral Mini 4B Realtime hyper-parameters"
    cfg = model_config(config, source)
    tensors: dict[str, Weight] = {}
    file_names: dict[str, str] = {}
    for name in gguf.tensors:
        canonical = original_to_canonical(name)
        if canonical in tensors:
            raise WeightsError(f"GGUF file {gguf.path} holds tensor {canonical} twice "
                               f"({file_names[canonical]} "
                               f"and {name})")
        tensors[canonical] = _as_loaded(gguf, name)
        file_names[canonical] = name
    try:
        validate_canonical(tensors, cfg, gguf.path, file_names)
    except WeightsError as error:
        if source == str(params_path):
            raise
        raise WeightsError(f"{error} (no params.json beside the file, so the published hyper-parameters were "
                           f"assumed; put this model's params.json at {params_path})") from None
    tensors = {name: neox_from_interleaved(name, t, cfg) for name, t in tensors.items()}
    tok = tekken_beside(gguf.path, tokenizer, "GGUF file")
    return Checkpoint(config=cfg, tensors=tensors, tokenizer=tok, format=FORMAT_TREVORS,
                      quant=dominant_dtype_name(tensors), path=gguf.path)


def _as_loaded(gguf: GGUFFile, name: str) -> Weight:
    """The tensor as a loader returns it: quantized only when it is a matrix (a Linear's weight)."""
    tensor = gguf.tensor(name)
    if isinstance(tensor, QuantizedTensor) and len(tensor.shape) != 2:
        return tensor.dequantize(torch.float32)  # a quantized norm or conv kernel: tiny, keep it simple
    return tensor

