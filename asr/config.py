"""Hyper-parameters of Voxtral Realtime as frozen dataclasses, validated once.

Every checkpoint format is translated into the Hugging Face ``config.json`` shape first (a plain
dict; the GGUF and params.json readers produce the same shape), and :func:`ModelConfig.from_hf_dict`
turns that into these dataclasses. Defaults are the published Voxtral Mini 4B Realtime values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from asr.errors import ConfigError


@dataclass(frozen=True)
class EncoderConfig:
    dim: int = 1280  # model width
    n_layers: int = 32
    n_heads: int = 32  # MHA: k/v have as many heads as q
    head_dim: int = 64
    hidden_dim: int = 5120  # SwiGLU inner width
    n_mels: int = 128
    sliding_window: int = 750  # encoder frames (50 Hz), so 15 s; query i sees keys (i-750, i]
    rope_theta: float = 1e6  # HF's encoder default is 1e4: always read it from the checkpoint
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class DecoderConfig:
    dim: int = 3072
    n_layers: int = 26
    n_heads: int = 32
    n_kv_heads: int = 8  # GQA 4:1
    head_dim: int = 128
    hidden_dim: int = 9216
    vocab_size: int = 131072
    sliding_window: int = 8192  # tokens (80 ms each), about 11 minutes
    max_positions: int = 131072  # position limit; a session rolls over before reaching it
    rope_theta: float = 1e6
    norm_eps: float = 1e-5
    ada_dim: int = 32  # bottleneck of the delay-conditioning MLP (hard-coded in the reference)


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    downsample: int = 4  # encoder frames grouped into one decoder token (50 Hz -> 12.5 Hz)
    default_delay_tokens: int = 6  # 480 ms

    @property
    def adapter_in(self) -> int:
        return self.encoder.dim * self.downsample

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Build from a dict shaped like the HF ``VoxtralRealtimeConfig`` JSON (``source`` names it)."""
        try:
            audio = dict(raw.get("audio_config") or {})
            text = dict(raw.get("text_config") or {})
            enc_rope = _rope_theta(audio, default=EncoderConfig.rope_theta)
            dec_rope = _rope_theta(text, default=DecoderConfig.rope_theta)
            encoder = EncoderConfig(
                dim=int(audio.get("hidden_size", EncoderConfig.dim)),
                n_layers=int(audio.get("num_hidden_layers", EncoderConfig.n_layers)),
                n_heads=int(audio.get("num_attention_heads", EncoderConfig.n_heads)),
                head_dim=int(audio.get("head_dim") or EncoderConfig.head_dim),
                hidden_dim=int(audio.get("intermediate_size", EncoderConfig.hidden_dim)),
                n_mels=int(audio.get("num_mel_bins", EncoderConfig.n_mels)),
                sliding_window=int(audio.get("sliding_window") or EncoderConfig.sliding_window),
                rope_theta=enc_rope,
                norm_eps=float(audio.get("rms_norm_eps", EncoderConfig.norm_eps)),
            )
            decoder = DecoderConfig(
                dim=int(text.get("hidden_size", DecoderConfig.dim)),
                n_layers=int(text.get("num_hidden_layers", DecoderConfig.n_layers)),
                n_heads=int(text.get("num_attention_heads", DecoderConfig.n_heads)),
                n_kv_heads=int(text.get("num_key_value_heads", DecoderConfig.n_kv_heads)),
                head_dim=int(text.get("head_dim") or DecoderConfig.head_dim),
                hidden_dim=int(text.get("intermediate_size", DecoderConfig.hidden_dim)),
                vocab_size=int(text.get("vocab_size", DecoderConfig.vocab_size)),
                sliding_window=int(text.get("sliding_window") or DecoderConfig.sliding_window),
                max_positions=int(text.get("max_position_embeddings", DecoderConfig.max_positions)),
                rope_theta=dec_rope,
                norm_eps=float(text.get("rms_norm_eps", DecoderConfig.norm_eps)),
            )
            config = cls(
                encoder=encoder,
                decoder=decoder,
                downsample=int(raw.get("downsample_factor", 4)),
                default_delay_tokens=int(raw.get("default_num_delay_tokens", 6)),
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{source}: unreadable hyper-parameter ({error}); check the file") from error
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        enc, dec = self.encoder, self.decoder
        for part, name in ((enc, "audio_config"), (dec, "text_config")):
            for f in fields(part):
                value = getattr(part, f.name)
                if value <= 0:
                    raise ConfigError(f"{source}: {name}.{f.name} = {value} must be positive")
                limit = _LIMITS.get(f.name)
                if limit is not None and value > limit:
                    # A damaged file must fail here, not allocate gigabytes while building shapes.
                    raise ConfigError(
                        f"{source}: {name}.{f.name} = {value} is implausible (limit {limit}); the file is damaged"
                    )
        if dec.n_heads % dec.n_kv_heads:
            raise ConfigError(
                f"{source}: text_config.num_attention_heads ({dec.n_heads}) must be a multiple of "
                f"num_key_value_heads ({dec.n_kv_heads})"
            )
        for part, name in ((enc, "audio_config"), (dec, "text_config")):
            if part.head_dim % 2:
                raise ConfigError(f"{source}: {name}.head_dim = {part.head_dim} must be even for RoPE")
        if dec.vocab_size <= 1000:
            raise ConfigError(
                f"{source}: text_config.vocab_size = {dec.vocab_size}; Voxtral reserves ids 0..999 for "
                "control tokens, so the vocabulary must be larger than 1000"
            )
        if self.downsample != 4:
            raise ConfigError(
                f"{source}: downsample_factor = {self.downsample}; Voxtral Realtime groups exactly 4 encoder "
                "frames per 80 ms token"
            )


# Upper bounds far above any real configuration (the published model uses 32 layers, 9216 wide).
_LIMITS = {
    "dim": 1 << 16, "n_layers": 1024, "n_heads": 1024, "n_kv_heads": 1024, "head_dim": 4096,
    "hidden_dim": 1 << 18, "n_mels": 1024, "vocab_size": 1 << 22, "sliding_window": 1 << 24,
    "max_positions": 1 << 30, "ada_dim": 1 << 16,
}  # fmt: skip


def _rope_theta(section: dict[str, Any], default: float) -> float:
    params = section.get("rope_parameters") or {}
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(section.get("rope_theta", default))
