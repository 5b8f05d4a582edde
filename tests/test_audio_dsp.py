"""tui.audio: downmix, streaming resampling to 16 kHz, levels, mixing, source tallies."""

from __future__ import annotations

import numpy as np
import pytest

from tui.audio import (
    LEVEL_FLOOR_DB,
    MonoResampler,
    SourceTally,
    dominant_source,
    downmix,
    mix,
    rms_dbfs,
)


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_downmix_is_the_channel_mean():
    block = np.array([[1.0, 0.0], [0.5, -0.5], [0.2, 0.4]], dtype=np.float32)  # [3, 2]
    assert downmix(block).tolist() == pytest.approx([0.5, 0.0, 0.3])
    assert downmix(block[:, :1]).tolist() == pytest.approx([1.0, 0.5, 0.2])
    assert downmix(block[:, 0]).dtype == np.float32
    with pytest.raises(ValueError):
        downmix(np.zeros((4, 0), dtype=np.float32))


@pytest.mark.parametrize("rate", [44_100, 48_000, 22_050, 8_000])
def test_streaming_resampler_keeps_length_and_frequency(rate):
    signal = tone(1000.0, rate, 2.0)
    resampler = MonoResampler(rate)
    pieces = [resampler.process(signal[i : i + 997]) for i in range(0, len(signal), 997)]  # odd blocks
    out = np.concatenate([*pieces, resampler.flush()])
    assert abs(len(out) - len(signal) * 16_000 / rate) <= 1
    assert peak_frequency(out, 16_000) == pytest.approx(1000.0, abs=2.0)
    # Same amplitude after the filter settles (HQ passband is flat at 1 kHz).
    assert np.sqrt(np.mean(out[1600:-1600] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert resampler.flush().size == 0  # flushing twice gives nothing more


def test_resampler_passes_16k_through_exactly():
    signal = np.random.default_rng(0).uniform(-1, 1, 5000).astype(np.float32)
    resampler = MonoResampler(16_000)
    out = np.concatenate(
        [resampler.process(signal[:1234]), resampler.process(signal[1234:]), resampler.flush()]
    )
    assert np.array_equal(out, signal)


def test_rms_dbfs_of_known_signals():
    assert rms_dbfs(np.ones(100, dtype=np.float32)) == pytest.approx(0.0)
    assert rms_dbfs(tone(440, 16_000, 1.0, amplitude=1.0)) == pytest.approx(-3.0103, abs=0.01)
    assert rms_dbfs(np.full(10, 0.1, dtype=np.float32)) == pytest.approx(-20.0)
    assert rms_dbfs(np.zeros(10, dtype=np.float32)) == LEVEL_FLOOR_DB
    assert rms_dbfs(np.zeros(0, dtype=np.float32)) == LEVEL_FLOOR_DB


def test_mix_sums_and_clips():
    a = np.array([0.5, 0.9, -0.9], dtype=np.float32)
    b = np.array([0.25, 0.5, -0.5], dtype=np.float32)
    assert mix([a, b]).tolist() == pytest.approx([0.75, 1.0, -1.0])
    with pytest.raises(ValueError):
        mix([a, b[:2]])


def test_dominant_source_and_tally():
    assert dominant_source({"mic": -20.0, "system": -40.0}) == "mic"
    assert dominant_source({"mic": -80.0, "system": -70.0}) is None  # both below -60 dBFS
    tally = SourceTally()
    tally.add({"mic": -20.0, "system": -40.0}, 0.5)
    tally.add({"mic": -90.0, "system": -10.0}, 2.0)  # system louder and longer
    assert tally.dominant() == "system"
    assert tally.label() == "System"
    levels = tally.levels()
    expected_system = 10 * np.log10((0.5 * 10**-4 + 2.0 * 10**-1) / 2.5)
    assert levels["system"] == pytest.approx(expected_system)
    tally.reset()
    assert tally.label() == ""
