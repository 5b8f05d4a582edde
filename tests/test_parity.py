"""The engine against the transformers reference (pinned in pyproject), tiny random models, float32.

Mel features within 1e-5; per-step logits within 1e-4; greedy ids identical for 300+ steps at
delays 80/480/960/2400 ms, with audio fed in random chunk sizes from 1 sample to 2 s, on three
shapes, one of them with windows small enough that both ring buffers wrap many times.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import asr
from asr.audio import LogMel, MelStream
from tests.reference import reference_mel, reference_stream
from tests.tiny_model import synthetic_speechlike

LOGIT_TOL = 1e-4
MEL_TOL = 1e-5
STEPS = 300


def random_chunks(audio: np.ndarray, seed: int) -> list[np.ndarray]:
    """Chunks from 1 sample to 2 s, log-uniformly, so tiny and huge pieces both occur."""
    rng = np.random.default_rng(seed)
    chunks, pos = [], 0
    while pos < len(audio):
        size = int(np.exp(rng.uniform(0, np.log(32000))))
        chunks.append(audio[pos : pos + size])
        pos += size
    return chunks


def run_engine(model: asr.Model, audio: np.ndarray, delay_ms: int, seed: int):
    session = model.stream(delay_ms)
    logits: list[torch.Tensor] = []
    session.logits_hook = lambda step_logits: logits.append(step_logits[0].float().cpu())
    tokens = []
    for chunk in random_chunks(audio, seed):
        tokens += session.feed(chunk, sample_rate=16000)
    tokens += session.finish()
    return tokens, logits


def test_mel_whole_clip_matches_reference():
    audio = np.concatenate([np.zeros(40960, np.float32), synthetic_speechlike(3.3, seed=5)])
    audio = np.concatenate([audio, np.zeros((-len(audio)) % 1280 + 17 * 1280, np.float32)])
    ours = LogMel().whole(torch.from_numpy(audio))
    ref = reference_mel(audio)
    assert ours.shape == ref.shape == (128, len(audio) // 160)
    assert float((ours - ref).abs().max()) <= MEL_TOL


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mel_incremental_equals_whole_clip(seed):
    rng = np.random.default_rng(seed)
    # Starts with silence like the real (left-padded) stream, so the reference's reflect padding
    # at the start reflects zeros, which is what the stream assumes.
    audio = np.concatenate([np.zeros(400), rng.standard_normal(50_000) * 0.1]).astype(np.float32)
    ref = reference_mel(np.concatenate([audio, np.zeros(400, np.float32)]))  # whole clip, zero tail
    stream = MelStream(LogMel())
    frames = [stream.push(chunk) for chunk in random_chunks(audio, seed)]
    ours = torch.cat(frames, dim=1)
    # The stream starts 200 samples before the clip (reflect padding of zeros = zeros) and yields
    # frame t once sample 160 t + 199 has arrived, so it has every frame but the last.
    n = ours.shape[1]
    assert n == (len(audio) + 200 - 400) // 160 + 1
    assert float((ours - ref[:, :n]).abs().max()) <= MEL_TOL


def assert_varied(ids: list[int]) -> None:
    """A stream that proves something: many distinct text ids, and control ids too."""
    text = [i for i in ids if i >= 1000]
    assert len(set(text)) >= 5, f"reference stream too uniform: {sorted(set(ids))[:20]}"
    assert any(i < 1000 for i in ids) and text, "reference stream lacks pads or text"


@pytest.mark.parametrize("preset", ["small", "wide", "wrap"])
@pytest.mark.parametrize("delay_ms", [80, 480, 960, 2400])
def test_stream_matches_reference(tiny_models, preset, delay_ms):
    path, hf = tiny_models(preset)
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    seconds = (STEPS + 20) * 0.08 - 0.08 * (delay_ms // 80 + 11) + 2.0
    audio = synthetic_speechlike(seconds, seed=delay_ms)
    ref_ids, ref_logits = reference_stream(hf, audio, delay_ms // 80)
    tokens, logits = run_engine(model, audio, delay_ms, seed=delay_ms + len(preset))
    ids = [t.id for t in tokens]
    assert len(ref_ids) >= STEPS
    assert_varied(ref_ids)
    assert 2 not in ref_ids, "EOS in the reference stream: the comparison would stop early"
    assert ids == ref_ids
    worst = max(float((a - b).abs().max()) for a, b in zip(logits, ref_logits, strict=True))
    assert worst <= LOGIT_TOL, f"logits differ by {worst}"
    # A near-tie would make id equality luck; record that the margins are real.
    margins = [float(lg.topk(2).values.diff().abs()) for lg in ref_logits]
    assert sorted(margins)[len(margins) // 100] > 10 * worst


def test_wrong_rope_layout_is_caught(tiny_models):
    """The parity test has teeth: interleaved-vs-halves q/k rows change the stream."""
    from asr.weights.names import interleaved_to_halves

    path, hf = tiny_models("small")
    model = asr.load_model(path, device="cpu", dtype=torch.float32, fast=False)
    for layer in model.net.decoder.layers:
        for proj, heads in ((layer.attention.wq, 4), (layer.attention.wk, 2)):
            proj.weight.data = interleaved_to_halves(proj.weight.data, heads)
    audio = synthetic_speechlike(20.0, seed=7)
    _, ref_logits = reference_stream(hf, audio, 6)
    _, logits = run_engine(model, audio, 480, seed=1)
    worst = max(float((a - b).abs().max()) for a, b in zip(logits, ref_logits, strict=False))
    assert worst > 100 * LOGIT_TOL


def test_one_frame_audio_offset_is_caught(tiny_models):
    path, hf = tiny_models("small")
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    audio = synthetic_speechlike(20.0, seed=8)
    ref_ids, ref_logits = reference_stream(hf, audio, 6)
    shifted = np.concatenate([np.zeros(160, np.float32), audio])
    tokens, logits = run_engine(model, shifted, 480, seed=2)
    worst = max(float((a - b).abs().max()) for a, b in zip(logits, ref_logits, strict=False))
    assert worst > 100 * LOGIT_TOL
    assert [t.id for t in tokens][: len(ref_ids)] != ref_ids
