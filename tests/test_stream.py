"""Streaming session behaviour: rollovers are exact, times are sane, the public contract holds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import asr
from asr.audio import SAMPLE_RATE
from tests.tiny_model import synthetic_speechlike


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return asr.load_model(tiny_model_dir, device="cpu", dtype=torch.float32)


def run(model, audio, delay_ms=480, chunk=4000):
    session = model.stream(delay_ms)
    tokens = []
    for start in range(0, len(audio), chunk):
        tokens += session.feed(audio[start : start + chunk])
    return session, tokens + session.finish()


def ids(tokens):
    return [t.id for t in tokens]


def with_pause(seconds_before=4.0, pause=1.0, seconds_after=5.0, seed=0):
    a = synthetic_speechlike(seconds_before, seed=seed) + 0.3 * np.sin(
        np.arange(int(seconds_before * 16000)) / 9
    )
    silence = np.zeros(int(pause * SAMPLE_RATE), np.float32)
    b = synthetic_speechlike(seconds_after, seed=seed + 1) + 0.3 * np.sin(
        np.arange(int(seconds_after * 16000)) / 7
    )
    return np.concatenate([a, silence, b]).astype(np.float32)


def test_every_step_is_a_token_with_sane_times(model):
    audio = synthetic_speechlike(8.0, seed=3)
    session, tokens = run(model, audio)
    # Positions 38 .. N - 1 at 480 ms: N = 32 + ceil(n / 1280) + 6 + 11.
    assert len(tokens) == 32 + 100 + 17 - 38
    starts = [t.start_s for t in tokens]
    assert starts == sorted(starts)
    assert all(0.0 <= t.start_s <= t.end_s <= 8.0 for t in tokens)
    assert all(t.text == "" for t in tokens if t.id < 1000)
    assert session.audio_s == pytest.approx(8.0)


def test_warm_up_leaves_nothing_behind(model):
    """Model.warm_up streams noise through a throwaway session (at another delay and chunking
    here): a stream after it gives exactly the ids a stream before it gave."""
    audio = synthetic_speechlike(4.0, seed=6)
    _, before = run(model, audio)
    model.warm_up(960, tokens=4, chunk_ms=160)
    _, after = run(model, audio)
    assert ids(after) == ids(before) and len(before) > 0
    assert not model.needs_warm_up  # on CPU nothing is prepared lazily: the app skips it


def test_chunking_does_not_change_the_stream(model):
    audio = synthetic_speechlike(6.0, seed=4)
    _, a = run(model, audio, chunk=1)
    _, b = run(model, audio, chunk=32000)
    assert ids(a) == ids(b)
    assert [t.start_s for t in a] == [t.start_s for t in b]


def test_integer_pcm_equals_float(model):
    audio = synthetic_speechlike(3.0, seed=5)
    pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)
    _, a = run(model, pcm.astype(np.float32) / 32768)
    _, b = run(model, pcm)
    assert ids(a) == ids(b)


def test_other_sample_rates_are_resampled(model):
    import soxr

    audio48 = synthetic_speechlike(4.0, seed=6, sample_rate=48000)
    session = model.stream(480)
    tokens = session.feed(audio48, sample_rate=48000) + session.finish()
    _, expected = run(model, soxr.resample(audio48, 48000, 16000, quality="HQ"), chunk=10**9)
    assert session.audio_s == pytest.approx(4.0, abs=1e-3)
    assert ids(tokens) == ids(expected)


def split_at(event_s):
    return int(round(event_s * SAMPLE_RATE))


def test_delay_change_rolls_over_at_a_pause_exactly(model):
    audio = with_pause()
    session = model.stream(480)
    tokens = session.feed(audio[: 3 * SAMPLE_RATE])
    session.set_delay(960)
    tokens += session.feed(audio[3 * SAMPLE_RATE :])
    tokens += session.finish()
    events = session.pop_events()
    assert [(e.kind, e.reason, e.delay_ms) for e in events] == [("rollover", "delay_change", 960)]
    cut = split_at(events[0].audio_s)
    assert 4.0 * SAMPLE_RATE <= cut <= 5.0 * SAMPLE_RATE  # inside the pause, not at the deadline
    # Exactness: the stream equals a 480 ms stream of the audio before the cut followed by a
    # 960 ms stream of the audio after it; nothing lost, nothing twice.
    _, before = run(model, audio[:cut], 480)
    _, after = run(model, audio[cut:], 960)
    assert ids(tokens) == ids(before) + ids(after)
    assert session.delay_ms == 960


def test_delay_change_without_a_pause_happens_within_the_deadline(model):
    audio = (
        0.3 * np.sin(np.arange(8 * SAMPLE_RATE) / 5) * (1 + np.sin(np.arange(8 * SAMPLE_RATE) / 900))
    ).astype(np.float32)
    audio += synthetic_speechlike(8.0, seed=9)
    session = model.stream(480)
    session.feed(audio[:SAMPLE_RATE])
    session.set_delay(160, max_wait_s=2.5)
    session.feed(audio[SAMPLE_RATE:])
    session.finish()
    (event,) = session.pop_events()
    assert 1.0 <= event.audio_s <= 3.5


def test_restart_is_immediate_and_exact(model):
    audio = synthetic_speechlike(6.0, seed=10)
    session = model.stream(480)
    tokens = session.feed(audio[:40000])
    session.restart()
    tokens += session.feed(audio[40000:]) + session.finish()
    (event,) = session.pop_events()
    assert event.reason == "restart" and split_at(event.audio_s) == 40000
    _, before = run(model, audio[:40000])
    _, after = run(model, audio[40000:])
    assert ids(tokens) == ids(before) + ids(after)


def test_eos_mid_stream_restarts_on_the_unconsumed_audio(model):
    audio = synthetic_speechlike(6.0, seed=11)
    session = model.stream(480)
    count = {"n": 0}

    def force_eos_once(logits):
        count["n"] += 1
        if count["n"] == 20:
            logits[0, 2] = 1e9

    session.logits_hook = force_eos_once
    tokens = session.feed(audio) + session.finish()
    (event,) = session.pop_events()
    assert event.reason == "eos"
    eos_at = ids(tokens).index(2)
    # The first stream's output ended at position 38 + 19 = 57, which consumed real audio up to
    # token 57 - 32 + 1 = 26; the new stream starts on the following sample.
    assert split_at(event.audio_s) == 26 * 1280
    _, after = run(model, audio[26 * 1280 :])
    assert ids(tokens)[eos_at + 1 :] == ids(after)


def test_position_limit_is_crossed_without_loss(tiny_models):
    path, _ = tiny_models("limit")  # 4096 positions
    model = asr.load_model(path, device="cpu", dtype=torch.float32)
    audio = np.concatenate([with_pause(100, 1.0, 100, seed=s) for s in range(3)])  # 10 min
    session, tokens = run(model, audio, chunk=16000)
    events = session.pop_events()
    assert events and all(e.reason == "position_limit" for e in events)
    cuts = [0, *[split_at(e.audio_s) for e in events], len(audio)]
    expected = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        expected += ids(run(model, audio[a:b], chunk=16000)[1])
    assert ids(tokens) == expected
    assert session.audio_s == pytest.approx(len(audio) / SAMPLE_RATE)


@pytest.mark.parametrize(
    ("samples", "rate", "match"),
    [
        (np.zeros((100, 2), np.float32), 16000, "1-D"),
        (np.array([0.0, np.nan], np.float32), 16000, "NaN"),
        (np.array([0.0, np.inf]), 16000, "NaN or infinite"),
        (np.zeros(10, np.complex64), 16000, "cannot be converted"),
        (np.zeros(10, np.int64), 16000, "cannot be converted"),
        (np.zeros(10, np.float32), 0, "not a plausible"),
        (np.zeros(10, np.float32), 10**9, "not a plausible"),
        (np.zeros(10, np.float32), 44100.5, "integer"),
        (np.zeros(10, np.float32), "16000", "integer"),
        ("not audio", 16000, "1-D"),
    ],
)
def test_bad_audio_is_a_specific_error(model, samples, rate, match):
    session = model.stream()
    with pytest.raises(asr.AudioError, match=match):
        session.feed(samples, sample_rate=rate)
    assert session.feed(np.zeros(0, np.float32)) == []  # the session still works


@pytest.mark.parametrize("delay", [0, 40, 70, 500, 2480, -80, True, "480", 480.0])
def test_bad_delays_are_rejected(model, delay):
    with pytest.raises(asr.DelayError, match="delay"):
        model.stream(delay)
    with pytest.raises(asr.DelayError):
        model.stream(480).set_delay(delay)


def test_feed_after_finish_needs_reset(model):
    session = model.stream()
    session.finish()
    with pytest.raises(asr.SessionError, match="reset"):
        session.feed(np.zeros(100, np.float32))
    session.reset()
    assert session.feed(np.zeros(100, np.float32)) == []


def test_asr_stays_headless():
    code = (
        "import asr, sys; asr.load_model; "
        "print(sorted({'textual', 'rich', 'sounddevice', 'tui'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
