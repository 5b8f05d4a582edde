"""Session audio recording beside the journal: round trip, crash (SIGKILL) and repair."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile

from tui.errors import JournalError
from tui.recording import AudioRecorder, recording_path, repair_recording


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_round_trip(tmp_path, fmt) -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.uniform(-0.9, 0.9, size).astype(np.float32) for size in (0, 1600, 321, 16000, 7)]
    recorder = AudioRecorder(recording_path(tmp_path / "s.jsonl", fmt), flush_interval_s=0.5)
    for chunk in chunks:
        assert recorder.write(chunk)
    recorder.write(np.array([2.0, -3.0], np.float32))  # out of range: clipped, not wrapped around
    recorder.close()
    audio, rate = soundfile.read(recorder.path, dtype="float32")
    expected = np.concatenate([*chunks, np.array([1.0, -1.0], np.float32)])
    assert rate == 16000 and audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=1.0 / 32768 + 1e-6)
    assert recorder.duration_s == len(expected) / 16000 and recorder.error is None


RECORDER = textwrap.dedent("""
    import sys, numpy as np
    from tui.recording import AudioRecorder
    recorder = AudioRecorder(sys.argv[1], flush_interval_s=0.1)
    rng = np.random.default_rng(1)
    while True:
        recorder.write(rng.uniform(-0.5, 0.5, 800).astype(np.float32))
        if recorder.samples_written % 1600 == 0:
            recorder.flush()
            print(recorder.samples_written, flush=True)
""")


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_recording_survives_sigkill_after_repair(tmp_path, fmt) -> None:
    path = tmp_path / f"s.{fmt}"
    child = subprocess.Popen([sys.executable, "-c", RECORDER, str(path)], stdout=subprocess.PIPE, text=True)
    flushed = 0
    while flushed < 16000 * 3:
        flushed = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    child.stdout.close()
    samples = repair_recording(path)
    lost_allowed = 0 if fmt == "wav" else 4608  # FLAC: the encoder's unflushed block
    assert samples >= flushed - lost_allowed
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and len(audio) == samples
    expected = np.random.default_rng(1).uniform(-0.5, 0.5, len(audio)).astype(np.float32)
    np.testing.assert_allclose(audio, expected, atol=1.0 / 32768 + 1e-6)
    if fmt == "wav":
        with open(path, "rb") as handle:  # sizes in the header are right now (other tools trust them)
            header = handle.read(44)
        assert int.from_bytes(header[40:44], "little") == samples * 2
        assert int.from_bytes(header[4:8], "little") == path.stat().st_size - 8
    assert repair_recording(path) == samples  # repairing twice changes nothing


def test_errors_are_reported_not_raised(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    reports: list[str | None] = []
    recorder = AudioRecorder(tmp_path / "file" / "s.wav", on_error=reports.append)
    assert recorder.error and reports and recorder.closed
    assert recorder.write(np.zeros(100, np.float32)) is False and recorder.samples_dropped == 100
    recorder.close()
    assert AudioRecorder(tmp_path / "s.mp3").error is not None
    with pytest.raises(JournalError, match="does not exist"):
        repair_recording(tmp_path / "none.wav")
    (tmp_path / "bad.wav").write_bytes(b"hello world, not audio")
    with pytest.raises(JournalError, match="not a WAV file"):
        repair_recording(tmp_path / "bad.wav")


def test_journal_records_audio_beside_itself(tmp_path) -> None:
    from tui.journal import Journal, read_journal
    from tui.segments import Segment

    journal = Journal(data_dir=tmp_path, record_audio="flac")
    assert journal.recorder is not None
    assert journal.header.audio_path == str(journal.path.with_suffix(".flac"))
    journal.recorder.write(np.zeros(16000 * 2, np.float32))
    journal.append_segment(Segment(0, "hi", 0.5, 1.0, final=True))
    journal.close()
    contents = read_journal(journal.path)
    assert contents.header.audio_path == contents.audio_path == str(journal.path.with_suffix(".flac"))
    assert contents.end["audio_s"] == 2.0 and contents.end["audio_error"] is None
    assert soundfile.info(contents.audio_path).frames == 32000
