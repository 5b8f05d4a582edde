"""Tiny random Voxtral Realtime models that actually test something (voxtral-realtime.md §8.1b).

Plain random weights make a tiny decoder repeat one id forever, and parity on such a stream
proves little. So the weights are shaped: small embedding rows (the fed-back token does not
swamp the audio), a 10x final-norm gain (logits spread, top-1/top-2 margins far above fp32
noise), sharper decoder attention, and the control ids moved along the mean direction of the
final hidden state so the stream looks like the real model's: mostly STREAMING_PAD, text ids in
between, EOS and the other control ids rare.

The model is built with transformers (the oracle), saved with ``save_pretrained`` (so the
directory is in the transformers format voxcap loads), with a tiny ``tekken.json`` beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tests.tekken_fixture import write_tiny_tekken

ROPE = {"rope_type": "default", "rope_theta": 1e6}

PRESETS: dict[str, dict] = {
    # The smallest useful shape (doc §8.1), GQA 2:1.
    "small": {
        "audio": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      head_dim=16, sliding_window=750),
        "text": dict(vocab_size=1536, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8192),
    },
    # Different widths, 3 layers, GQA 3:1, odd head counts.
    "wide": {
        "audio": dict(hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6,
                      head_dim=16, sliding_window=750),
        "text": dict(vocab_size=1280, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
                     num_attention_heads=6, num_key_value_heads=2, head_dim=16, sliding_window=8192),
    },
    # Windows small enough that both ring buffers wrap many times within 300 steps.
    "wrap": {
        "audio": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      head_dim=16, sliding_window=13),
        "text": dict(vocab_size=1536, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=23),
    },
    # A position limit a long test can cross (4096 positions = 5.5 min of audio).
    "limit": {
        "audio": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=3,
                      head_dim=16, sliding_window=40),
        "text": dict(vocab_size=1280, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                     num_attention_heads=3, num_key_value_heads=1, head_dim=16, sliding_window=64,
                     max_position_embeddings=4096),
    },
}  # fmt: skip


def hf_config(preset: str) -> object:
    from transformers import VoxtralRealtimeConfig

    spec = PRESETS[preset]
    return VoxtralRealtimeConfig(
        audio_config={**spec["audio"], "num_mel_bins": 128, "rope_parameters": dict(ROPE)},
        text_config={**spec["text"], "rope_parameters": dict(ROPE)},
    )


def synthetic_speechlike(seconds: float, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Deterministic audio with structure: voiced bursts (harmonics, vibrato), noise, and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n, dtype=np.float64)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.15, 0.9) * sample_rate)
        end = min(n, pos + length)
        kind = rng.random()
        seg = t[pos:end]
        if kind < 0.55:  # a "vowel": harmonics of a gliding pitch
            f0 = rng.uniform(90, 260) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 7) * seg))
            phase = 2 * np.pi * np.cumsum(f0) / sample_rate
            sig = sum(np.sin(k * phase) / k for k in range(1, 8))
            out[pos:end] = 0.3 * sig * np.hanning(end - pos)
        elif kind < 0.8:  # a fricative: band of noise
            out[pos:end] = 0.08 * rng.standard_normal(end - pos) * np.hanning(end - pos)
        # else: a pause (silence with faint noise)
        out[pos:end] += 0.002 * rng.standard_normal(end - pos)
        pos = end
    return out.astype(np.float32)


def build_hf_model(preset: str = "small", seed: int = 0) -> torch.nn.Module:
    """A transformers model with shaped random weights (float32, eval mode)."""
    from transformers import VoxtralRealtimeForConditionalGeneration

    torch.manual_seed(seed)
    model = VoxtralRealtimeForConditionalGeneration(hf_config(preset)).eval()
    lm = model.model.language_model
    d = lm.config.hidden_size
    with torch.no_grad():
        lm.embed_tokens.weight.normal_(0.0, 0.1 / math.sqrt(d))
        lm.norm.weight.mul_(30.0)
        # Random adapters give audio embeddings a third the size of a token row; make the audio
        # the main input, as in the real model, so the stream follows the sound.
        model.model.multi_modal_projector.linear_2.weight.mul_(8.0)
        for layer in lm.layers:
            layer.self_attn.q_proj.weight.mul_(2.0)
            layer.self_attn.k_proj.weight.mul_(2.0)
        _shape_control_ids(model, seed)
    return model


@torch.no_grad()
def _shape_control_ids(model: torch.nn.Module, seed: int) -> None:
    """Make STREAMING_PAD common, STREAMING_WORD occasional, other control ids (EOS too) rare."""
    lm = model.model.language_model
    emb = lm.embed_tokens.weight  # [V, d], tied to the head
    feats = _calibration_hidden_states(model, seed)  # [n, d], final-normed
    direction = feats.mean(0)
    direction /= direction.norm()
    proj = feats @ direction  # [n], all positive for the mean direction of these features
    # Text rows lose their component along the common direction, so which text id wins depends on
    # what is specific to each position (the audio), not on one row aligned with the mean.
    emb[1000:] -= (emb[1000:] @ direction)[:, None] * direction[None, :]
    best_text = (feats @ emb[1000:].T).max(-1).values  # [n]

    def shift_for(row: int, share: float) -> float:
        """Shift along ``direction`` that makes ``row`` beat every text id on ``share`` of the features."""
        needed = (best_text - feats @ emb[row]) / proj  # per feature: shift at which row wins
        return float(torch.quantile(needed, share))

    # Control ids (EOS too) get near-zero rows: a logit near 0 loses to the best of hundreds of
    # text logits. PAD then wins most of the time and WORD now and then.
    pad, word = shift_for(32, 0.97), shift_for(33, 0.3)
    emb[:1000] *= 0.01
    emb[32] += pad * direction
    emb[33] += word * direction


@torch.no_grad()
def _calibration_hidden_states(model: torch.nn.Module, seed: int) -> torch.Tensor:
    from transformers import VoxtralRealtimeFeatureExtractor

    audio = synthetic_speechlike(6.0, seed=seed + 100)
    right = 1280 * 17 + (-len(audio)) % 1280
    padded = np.concatenate([np.zeros(40960, np.float32), audio, np.zeros(right, np.float32)])
    fe = VoxtralRealtimeFeatureExtractor()
    mel = fe(padded, sampling_rate=16000, return_tensors="pt").input_features  # [1, 128, 8N]
    n_tok = mel.shape[-1] // 8
    rng = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, model.config.text_config.vocab_size, (1, n_tok), generator=rng)
    ids[0, torch.rand(n_tok, generator=rng) < 0.8] = 32  # the fed-back ids of a typical stream
    out = model(input_ids=ids, input_features=mel, num_delay_tokens=6, output_hidden_states=True)
    return model.model.language_model.norm(out.hidden_states[-1][0])  # [n, d]


def make_tiny_model_dir(path: Path, preset: str = "small", seed: int = 0) -> Path:
    """Write a transformers-format model directory (config.json, model.safetensors, tekken.json)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = build_hf_model(preset, seed)
    model.save_pretrained(path)
    write_tiny_tekken(path / "tekken.json", vocab_size=model.config.text_config.vocab_size, seed=seed)
    return path
