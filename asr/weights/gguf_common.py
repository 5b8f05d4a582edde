"""Shared pieces of the GGUF and original-format loaders: the embedded vocabulary, the published
config (Hugging Face ``config.json`` shape), params.json translation and tensor-set checks."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asr.config import ModelConfig
from asr.errors import ConfigError, TokenizerError, WeightsError
from asr.quant.tensor import QuantizedTensor

Weight = torch.Tensor | QuantizedTensor


@dataclass(frozen=True)
class EmbeddedVocab:
    """A vocabulary stored inside a GGUF (transcribe.cpp): gpt2-style byte-to-unicode token strings.

    ``tokens[i]`` is the string of id i. For ids of type 1 (normal) every character maps back to
    one byte through GPT-2's ``bytes_to_unicode`` table; ids of type 3 (control) are specials
    such as ``<s>`` or ``[STREAMING_PAD]`` (ids 0..999 in Tekken).
    """

    tokens: list[str]
    token_types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int | None = None
    pad_id: int | None = None
    streaming_pad_id: int | None = None
    merges: list[str] = field(default_factory=list)
    model: str = "gpt2"
    pre: str | None = None


def gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by ``tokenizer.ggml.model = gpt2``.

    Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68
    bytes map, in order, to U+0100, U+0101, ...
    """
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


def gpt2_token_string(token: bytes, table: dict[int, str] | None = None) -> str:
    """The gpt2 byte-level string of a token's bytes."""
    table = table or gpt2_byte_to_unicode()
    return "".join(table[b] for b in token)


# Published Voxtral Mini 4B Realtime hyper-parameters (voxtral-realtime.md §2.1, §3, §4).
_PUBLISHED: dict = {
    "model_type": "voxtral_realtime",
    "audio_config": {
        "model_type": "voxtral_realtime_encoder", "hidden_size": 1280, "intermediate_size": 5120,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 64,
        "num_mel_bins": 128, "sliding_window": 750, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "max_position_embeddings": 1500, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    },
    "text_config": {
        "model_type": "voxtral_realtime_text", "vocab_size": 131072, "hidden_size": 3072,
        "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "sliding_window": 8192, "hidden_act": "silu",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
    },
    "downsample_factor": 4, "default_num_delay_tokens": 6, "audio_length_per_tok": 8,
    "projector_hidden_act": "gelu", "tie_word_embeddings": True,
}


def published_config() -> dict:
    """A fresh copy of the published configuration, in the HF ``config.json`` shape."""
    return copy.deepcopy(_PUBLISHED)


def _get(section: Mapping, key: str, source: str) -> object:
    if key not in section:
        raise ConfigError(f"{source}: missing field {key}; the file is incomplete or not Voxtral Realtime")
    return section[key]


def config_from_params_json(params: object, source: str) -> dict:
    """Translate Mistral's ``params.json`` into the HF ``config.json`` shape."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    try:
        whisper = params["multimodal"]["whisper_model_args"]
        enc = whisper["encoder_args"]
        down = whisper.get("downsample_args", {}).get("downsample_factor", 4)
        mel_bins = enc.get("audio_encoding_args", {}).get("num_mel_bins", 128)
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(f"{source}: missing multimodal.whisper_model_args.encoder_args; this params.json "
                          "is not a Voxtral Realtime model's") from None
    config = published_config()
    a, t = config["audio_config"], config["text_config"]
    a.update(hidden_size=_get(enc, "dim", source), intermediate_size=_get(enc, "hidden_dim", source),
             num_hidden_layers=_get(enc, "n_layers", source),
             num_attention_heads=_get(enc, "n_heads", source),
             head_dim=_get(enc, "head_dim", source), num_mel_bins=mel_bins,
             sliding_window=enc.get("sliding_window", 750), rms_norm_eps=enc.get("norm_eps", 1e-5))
    a["num_key_value_heads"] = enc.get("n_kv_heads", a["num_attention_heads"])
    a["rope_parameters"]["rope_theta"] = enc.get("rope_theta", 1e6)
    t.update(vocab_size=_get(params, "vocab_size", source), hidden_size=_get(params, "dim", source),
             intermediate_size=_get(params, "hidden_dim", source),
             num_hidden_layers=_get(params, "n_layers", source),
             num_attention_heads=_get(params, "n_heads", source),
             num_key_value_heads=_get(params, "n_kv_heads", source),
             head_dim=_get(params, "head_dim", source),
             sliding_window=params.get("sliding_window", 8192),
             max_position_embeddings=params.get("model_max_length", 131072),
             rms_norm_eps=params.get("norm_eps", 1e-5))
    t["rope_parameters"]["rope_theta"] = params.get("rope_theta", 1e6)
    config["downsample_factor"] = down
    if params.get("ada_rms_norm_t_cond") is False:
        raise ConfigError(f"{source}: ada_rms_norm_t_cond is false; Voxtral Realtime needs delay "
                          "conditioning")
    if params.get("ada_rms_norm_t_cond_dim", 32) != 32:
        raise ConfigError(f"{source}: ada_rms_norm_t_cond_dim is {params['ada_rms_norm_t_cond_dim']}; "
                          "voxcap supports the published 32")
    return config


# Upper bounds far above the published model (1280/3072 wide, 32/26 layers, 131072 tokens): a
# value beyond them is corruption, and must be refused before anything is sized from it (a
# 2**31 head_dim once made building the meta model allocate gigabytes of RoPE tables).
_LIMITS = {
    "hidden_size": 1 << 16, "intermediate_size": 1 << 18, "num_hidden_layers": 1024,
    "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 4096, "num_mel_bins": 1024,
    "sliding_window": 1 << 22, "max_position_embeddings": 1 << 22, "vocab_size": 1 << 22,
}
_TOP_LIMITS = {"downsample_factor": 64, "default_num_delay_tokens": 1024, "audio_length_per_tok": 1 << 16}


def _check_limits(config: dict, source: str) -> None:
    sections = [("audio_config", config.get("audio_config")), ("text_config", config.get("text_config")),
                ("", config)]
    for prefix, section in sections:
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}: {prefix or 'the config'} is not a mapping")
        limits = _TOP_LIMITS if not prefix else _LIMITS
        for key, limit in limits.items():
            value = section.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= limit:
                name = f"{prefix}.{key}" if prefix else key
                raise ConfigError(f"{source}: {name} is {value!r}, outside 1..{limit}; the file is corrupt")
        if prefix:
            eps = section.get("rms_norm_eps", 1e-5)
            rope = section.get("rope_parameters") or {}
            theta = rope.get("rope_theta", 1e6) if isinstance(rope, Mapping) else None
            for name, value in (("rms_norm_eps", eps), ("rope_theta", theta)):
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not 0 < value < float("inf"):
                    raise ConfigError(f"{source}: {prefix}.{name} is {value!r}, not a positive number")


def model_config(config: dict, source: str) -> ModelConfig:
    """The engine's :class:`ModelConfig` for an HF-shaped dict, after bounds checks on every size."""
    _check_limits(config, source)
    return ModelConfig.from_hf_dict(config, source=source)


def validate_canonical(tensors: Mapping[str, Weight], cfg: ModelConfig, file: Path | str,
                       file_names: Mapping[str, str], file_name_of: Callable[[str], str] = str) -> None:
    """Exactly the canonical tensors of ``cfg`` with the right shapes; messages use the file's names
    (``file_names`` for tensors present, ``file_name_of(canonical)`` for missing ones)."""
    from asr.weights.names import expected_shapes

    expected = expected_shapes(cfg)
    missing = [name for name in expected if name not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{file} is missing tensor {file_name_of(missing[0])}{more}; the file is "
                           "incomplete, or its hyper-parameters do not match its tensors")
    extra = [name for name in tensors if name not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise WeightsError(f"{file} has unexpected tensor {file_names.get(extra[0], extra[0])}{more}: the "
                           "hyper-parameters do not describe it (layer count?) or this is another model")
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise WeightsError(f"{file}: tensor {file_names.get(name, name)} has shape {list(got)} but the "
                               f"hyper-parameters need {list(shape)}")


def tekken_beside(path: Path, explicit: str | Path | None, what: str) -> Path:
    """``tekken.json`` given explicitly or found next to ``path`` (a file or a directory)."""
    if explicit is not None:
        tok = Path(explicit).expanduser()
        if not tok.is_file():
            raise TokenizerError(f"tokenizer file {tok} does not exist; pass the path of the model's "
                                 "tekken.json")
        return tok
    folder = path if path.is_dir() else path.parent
    tok = folder / "tekken.json"
    if not tok.is_file():
        raise TokenizerError(f"{what} {path} has no tokenizer: put tekken.json from "
                             f"mistralai/Voxtral-Mini-4B-Realtime-2602 at {tok} (or pass tokenizer=PATH)")
    return tok
