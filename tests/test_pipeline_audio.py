"""Real audio, end to end: paplay -> PulseAudio null sink -> the running ``voxcap listen --headless``.

A private PulseAudio server (``tests/pulse.py``) plays an espeak-ng speech WAV into a null sink;
the real ``voxcap`` process captures it, through the microphone path (sounddevice on PortAudio's
``pulse``/``default`` ALSA device, reading the default source = the sink's monitor) or the system
audio path (``parec`` on the monitor), and runs it through the real pipeline (source ->
AudioBuffer -> AsrWorker thread -> engine -> journal/JSONL) with a tiny random model. SIGINT
then stops it, as Ctrl+C would.

Oracles:
  * the played file itself: the process is the real CLI (``tui.cli.main``), started through a
    small launcher that copies every array the worker hands to the engine's
    ``StreamingSession.feed`` into a tap file (pass-through, nothing else changes). The tapped
    16 kHz audio must hold the speech: high correlation, same energy, same loud span, no gap;
  * the engine's own audio clock (``stream flushed (...) at X s``, the worker's debug log, which
    the launcher sends to stderr) must equal the tapped duration: it counted every fed sample;
  * the engine itself: the same tiny model, run in the test on the tapped audio, decodes the
    same text the process printed (and decodes no text at all from silence of that length);
  * the process's documented outputs: exit 130 after SIGINT, the journal path on stderr, a
    journal whose header names the input and whose end record says SIGINT, JSONL that parses
    and whose events carry the source and times inside the session's audio.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import asr
from tests.pulse import SINK, PulseServer, PulseUnavailable, best_alignment, overlap
from tui.audio import rms_dbfs
from tui.journal import read_journal
from tui.sources import read_file_16k

pytestmark = [
    pytest.mark.audio,
    pytest.mark.skipif(shutil.which("paplay") is None, reason="paplay is not installed (pulseaudio-utils)"),
    pytest.mark.skipif(shutil.which("parec") is None, reason="parec is not installed (pulseaudio-utils)"),
]

RATE = 16_000
# Runs the real CLI in this interpreter after two pass-through hooks: every array fed to the
# engine is appended (float32) to the tap file, and the worker's debug log (its audio clock at
# each flush) goes to stderr.
LAUNCHER = """
import logging, sys
import numpy as np
import asr.stream
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
logging.getLogger("tui.worker").setLevel(logging.DEBUG)
tap = open(sys.argv[1], "wb")
feed = asr.stream.StreamingSession.feed
def tapped_feed(self, samples, sample_rate=16000):
    assert sample_rate == 16000, sample_rate
    tap.write(np.asarray(samples, dtype=np.float32).tobytes())
    tap.flush()
    return feed(self, samples, sample_rate)
asr.stream.StreamingSession.feed = tapped_feed
from tui.cli import main
sys.exit(main(sys.argv[2:]))
"""




@dataclass
class ListenRun:
    returncode: int
    stdout: str
    stderr: str
    tap: np.ndarray  # [n] float32, 16 kHz: everything the engine was fed
    data_dir: Path


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"voxcap exited ({process.returncode}) while waiting for {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def record_streams(server: PulseServer) -> int:
    """How many clients record from the server now (each capture path opens one)."""
    listing = server.pactl("list", "short", "source-outputs").stdout
    return len([line for line in listing.splitlines() if line.strip()])


def read_tap(path: Path) -> np.ndarray:
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) - len(data) % 4], dtype=np.float32)


def loud_span(samples: np.ndarray, threshold: float = 0.05) -> tuple[int, int] | None:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return (int(loud[0]), int(loud[-1])) if loud.size else None


def run_listen(server: PulseServer, wav: Path, model_dir: Path, tmp_path: Path, source_args: list[str]) -> ListenRun:
    """Start voxcap, wait until it records from the server, play ``wav``, wait until the engine
    got all of it, then SIGINT; returns what the process left behind."""
    reference = read_file_16k(wav)
    ref_span = loud_span(reference)
    assert ref_span is not None
    tap_path = tmp_path / "fed.f32"
    data_dir, config_dir = tmp_path / "data", tmp_path / "config"
    env = {
        **server.env,
        "VOXCAP_DATA_DIR": str(data_dir),
        "VOXCAP_CONFIG_DIR": str(config_dir),
        "XDG_CONFIG_HOME": str(config_dir),  # in case a path still comes from platformdirs
        "XDG_DATA_HOME": str(data_dir),
        "OMP_NUM_THREADS": "1",  # a tiny model: one thread is fastest on a small CI box
    }
    command = [
        sys.executable, "-c", LAUNCHER, str(tap_path),
        "listen", "--headless", "--format", "jsonl", *source_args,
        "--model", str(model_dir), "--compute-device", "cpu", "--dtype", "float32",
    ]  # fmt: skip
    before = record_streams(server)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Ready when its capture stream is connected to the server (model loaded, source started).
        wait_for(lambda: record_streams(server) > before, 60, "the capture stream to connect", process)
        time.sleep(0.3)  # the stream is running before the sound starts
        player = server.play(wav, SINK)
        assert player.wait(timeout=30) == 0, player.stderr.read() if player.stderr else ""

        def engine_has_it_all() -> bool:  # a null sink's monitor lags by up to ~2 s
            if not tap_path.exists():
                return False
            span = loud_span(read_tap(tap_path))
            return span is not None and span[1] - span[0] >= ref_span[1] - ref_span[0] - 0.1 * RATE

        wait_for(engine_has_it_all, 15, "the played speech to reach the engine", process)
        time.sleep(0.5)  # a little silence after it
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return ListenRun(process.returncode, stdout, stderr, read_tap(tap_path), data_dir)




def assert_engine_got_the_speech(run: ListenRun, wav: Path, model_dir: Path, source: str, device: str | None) -> None:
    assert run.returncode == 130, f"exit {run.returncode} after SIGINT: {run.stderr[-2000:]}"
    assert "voxcap: error" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]

    # 1. The engine was fed the speech, whole: the tap holds the played file at one shift.
    reference = read_file_16k(wav)
    fed = run.tap
    assert fed.size > len(reference), f"the engine got {fed.size / RATE:.2f} s, less than the file"
    lag, correlation = best_alignment(fed, reference)
    assert correlation > 0.95, f"what the engine got does not match what was played (r={correlation:.3f})"
    assert lag > -0.1 * RATE  # a sink waking up may swallow a few ms, no more
    segment, ref = overlap(fed, reference, lag)
    assert len(ref) >= len(reference) - 0.1 * RATE
    assert rms_dbfs(segment) == pytest.approx(rms_dbfs(ref), abs=1.0)  # same level
    assert rms_dbfs(segment) > -40  # speech, far above the silence around it
    fed_span, ref_span = loud_span(fed), loud_span(reference)
    assert fed_span is not None and ref_span is not None
    assert fed_span[1] - fed_span[0] == pytest.approx(ref_span[1] - ref_span[0], abs=0.1 * RATE)
    assert rms_dbfs(fed[lag + len(reference) + 800 :]) < -60  # silence (or nothing) after it

    # 2. The engine's audio clock counted every fed sample (the worker logs it at the final flush:
    # "stop", or "end-of-input" when the stopped source closed the buffer first; both flush).
    flushes = re.findall(r"stream flushed \((?:stop|end-of-input)\) at ([0-9.]+) s", run.stderr)
    assert flushes, f"no final flush logged: {run.stderr[-2000:]}"
    assert float(flushes[-1]) == pytest.approx(fed.size / RATE, abs=0.01)

    # 3. The journal: the path on stderr, the input named, closed by SIGINT.
    saved = re.findall(r"voxcap: transcript saved to (\S+)", run.stderr)
    assert saved, run.stderr[-2000:]
    journal_path = Path(saved[-1])
    assert journal_path.parent == run.data_dir / "sessions"
    journal = read_journal(journal_path)
    assert journal.header.input_source == source and journal.header.input_device == device
    assert journal.header.model_format and journal.header.device == "cpu"
    assert journal.end is not None and journal.end["reason"] == "SIGINT"
    assert not journal.torn_tail and journal.damaged_lines == 0
    assert not [m for m in journal.marks if m.kind == "dropped_audio"]  # the tiny model keeps up

    # 4. JSONL on stdout: events only, each in the session's audio, tagged with the input.
    duration_s = fed.size / RATE
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert {event["type"] for event in events} <= {"partial", "final", "mark", "stats"}
    # The process's own account of the audio it captioned: the last "stats" event.
    stats = [event for event in events if event["type"] == "stats"]
    assert stats, "no stats event in the JSONL output"
    assert abs(stats[-1]["audio_s"] - duration_s) <= 0.5 and stats[-1]["dropped_s"] == 0.0
    finals = [event for event in events if event["type"] == "final"]
    assert [event["index"] for event in finals] == [segment.index for segment in journal.segments]
    for event in finals:
        assert event["source"] == source
        assert 0.0 <= event["start_s"] <= event["end_s"] <= duration_s + 2.5  # + the delay's padding
    for event in events:
        if event["type"] == "partial":
            assert 0.0 <= event["start_s"] <= duration_s + 2.5

    # 5. What it printed is the engine's reading of what it captured: the same model, run here on
    # the tapped audio (one feed, then finish), decodes the same text from the same moment.
    session = asr.load_model(model_dir, device="cpu", dtype=torch.float32).stream(delay_ms=480)
    tokens = session.feed(fed, sample_rate=RATE) + session.finish()
    text_tokens = [token for token in tokens if not token.is_control and token.text]
    assert text_tokens, "the tiny model decoded no text from the speech (it does from this file)"
    assert finals, f"no final segment printed: {run.stdout[-2000:]}"
    assert "".join("".join(event["text"] for event in finals).split()) == "".join(
        "".join(token.text for token in text_tokens).split()
    )
    assert finals[0]["start_s"] == pytest.approx(text_tokens[0].start_s, abs=1e-3)
    # ... and that text came from the sound: silence of the same length decodes to none.
    session.reset()
    silent = session.feed(np.zeros_like(fed), sample_rate=RATE) + session.finish()
    assert not [token for token in silent if not token.is_control and token.text]


@pytest.fixture(scope="module")
def own_pulse() -> Iterator[PulseServer]:
    """A server of this module's own. The voxcap processes here are separate PortAudio clients;
    sharing the session's server with the in-process source tests made those depend on order."""
    server = PulseServer()
    try:
        server.start()
    except (PulseUnavailable, OSError) as error:
        server.stop()
        pytest.skip(f"no PulseAudio server for audio tests: {error}")
    yield server
    server.stop()


@pytest.fixture
def portaudio_sees_pulse(own_pulse: PulseServer) -> PulseServer:
    """The server, once a fresh PortAudio process lists the ALSA ``pulse`` device (checked in a
    subprocess, like voxcap itself, so this process's PortAudio state is left alone)."""
    probe = "import sounddevice as sd; print('\\n'.join(d['name'] for d in sd.query_devices()))"
    listed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=own_pulse.env)
    if listed.returncode != 0:
        pytest.skip(f"PortAudio is unavailable: {listed.stderr.strip()[-200:]}")
    if "pulse" not in listed.stdout.splitlines():
        pytest.skip("PortAudio lists no 'pulse' device: install libasound2-plugins (ALSA's pulse plugin)")
    return own_pulse


@pytest.mark.parametrize("device", [None, "pulse"])  # PortAudio's default device, and ALSA's pulse
def test_microphone_feeds_the_running_pipeline(portaudio_sees_pulse, speech_wav, tiny_model_dir, tmp_path, device):
    portaudio_pulse = portaudio_sees_pulse
    # The default source is the null sink's monitor, so the microphone hears what the sink plays.
    portaudio_pulse.set_default_source(f"{SINK}.monitor")
    device_args = [] if device is None else ["--device", device]
    run = run_listen(portaudio_pulse, speech_wav, tiny_model_dir, tmp_path, ["--source", "mic", *device_args])
    assert_engine_got_the_speech(run, speech_wav, tiny_model_dir, "mic", device)


def test_monitor_source_feeds_the_running_pipeline(own_pulse, speech_wav, tiny_model_dir, tmp_path):
    pulse_server = own_pulse
    run = run_listen(
        pulse_server, speech_wav, tiny_model_dir, tmp_path, ["--source", "system", "--device", f"{SINK}.monitor"]
    )
    assert_engine_got_the_speech(run, speech_wav, tiny_model_dir, "system", f"{SINK}.monitor")
