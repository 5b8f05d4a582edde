"""Headless mode: finalized lines or JSONL events on stdout, journal first, automatic for pipes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.fake_engine import FakeModel, FakeSource, speech_like
from tui.headless import run_headless_async
from tui.journal import read_journal
from tui.runtime import default_journal
from tui.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def conversation() -> np.ndarray:
    return np.concatenate([speech_like(1.0), speech_like(1.6, loud=False), speech_like(1.0, seed=3)])


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VOXCAP_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("VOXCAP_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_text_output_is_the_finalized_lines_in_the_journal(dirs: Path) -> None:
    settings = Settings(source="file", file="talk.wav")
    model = FakeModel()
    journal = default_journal(settings, model.info, lambda message: None)
    out = io.StringIO()
    code = asyncio.run(run_headless_async(settings, model, FakeSource(conversation()), journal, out))
    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["Hello world.", "This is a test of voxcap live captions."]
    contents = read_journal(journal.path)
    assert [s.text for s in contents.segments] == lines
    assert contents.ended_cleanly and contents.end["reason"] == "normal"


@pytest.mark.parametrize("needs_warm_up", [True, False])
def test_a_cuda_model_warms_up_before_the_audio_starts(dirs: Path, needs_warm_up: bool) -> None:
    """Autotuning and compiles (CUDA) happen before the stream that captions opens; a model that
    prepares nothing lazily (CPU) is not warmed up."""
    settings = Settings(source="file", file="talk.wav", delay_ms=960)
    model = FakeModel(needs_warm_up=needs_warm_up)
    code = asyncio.run(run_headless_async(settings, model, FakeSource(conversation()), None, io.StringIO()))
    assert code == 0
    warm_ups = [call for call in model.calls if call[0] == "warm_up"]
    if needs_warm_up:
        assert model.calls[:2] == [("warm_up", 960), ("stream", 960)]
    assert len(warm_ups) == needs_warm_up


def test_jsonl_events(dirs: Path) -> None:
    settings = Settings(source="file", file="talk.wav", output_format="jsonl", language="en")
    out = io.StringIO()
    code = asyncio.run(run_headless_async(settings, FakeModel(), FakeSource(conversation()), None, out))
    assert code == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    finals = [e for e in events if e["type"] == "final"]
    partials = [e for e in events if e["type"] == "partial"]
    assert [e["index"] for e in finals] == list(range(len(finals)))
    assert finals[1]["text"] == "This is a test of voxcap live captions." and finals[1]["language"] == "en"
    assert all(e["start_s"] <= e["end_s"] for e in finals)
    assert partials and all(e["text"] for e in partials)
    # the first final's text grew through partials that were its prefixes
    first_final_at = events.index(finals[0])
    first_partials = [e["text"] for e in events[:first_final_at] if e["type"] == "partial"]
    assert first_partials and all(finals[0]["text"].startswith(p) for p in first_partials)


def run_cli(*args: str, env_dirs: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "VOXCAP_CONFIG_DIR": str(env_dirs / "config"), "VOXCAP_DATA_DIR": str(env_dirs / "data")}
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, timeout=300
    )


def test_invalid_flag_is_one_line_naming_the_key(dirs: Path) -> None:
    done = run_cli("listen", "--delay", "500", "--headless", env_dirs=dirs)
    assert done.returncode == 2
    err = done.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "'delay_ms'" in err[0] and "80..2400 in steps of 80" in err[0]


def test_real_voxcap_on_a_wav_is_headless_when_piped(dirs: Path, tiny_model_dir: Path) -> None:
    from tests.tiny_model import synthetic_speechlike

    wav = dirs / "speech.wav"
    sf.write(wav, synthetic_speechlike(4.0), 16000)
    (dirs / "config").mkdir()
    (dirs / "config" / "config.yaml").write_text("pause_s: 0.24\nmax_segment_s: 1.0\n")
    # no --headless: stdout is a pipe, so voxcap must not start the TUI
    done = run_cli(
        str(wav),
        "--model",
        str(tiny_model_dir),
        "--compute-device",
        "cpu",
        "--dtype",
        "float32",
        "--fast",
        env_dirs=dirs,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    journals = list((dirs / "data" / "sessions").glob("*.jsonl"))
    assert len(journals) == 1 and str(journals[0]) in done.stderr.decode()
    contents = read_journal(journals[0])
    assert [s.text for s in contents.segments] == lines and lines
    assert contents.header.model_format and contents.header.input_source == "file"


def test_command_line_maps_onto_settings(dirs: Path) -> None:
    import argparse

    from tui.commands import listen

    parser = argparse.ArgumentParser()
    listen.register(parser.add_subparsers())
    args = parser.parse_args(["listen", "--file", "talk.wav", "--delay", "960", "-l", "de", "--fast", "--no-journal"])
    settings = listen.settings_from_args(args)
    assert (settings.source, settings.file, settings.delay_ms, settings.language) == ("file", "talk.wav", 960, "de")
    assert not settings.realtime and not settings.journal
    args = parser.parse_args(["listen", "--stdin", "--stdin-rate", "48000", "--format", "jsonl"])
    settings = listen.settings_from_args(args)
    assert (settings.source, settings.stdin_rate, settings.output_format) == ("stdin", 48000, "jsonl")
