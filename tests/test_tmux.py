"""The real `voxcap` TUI in a tmux pane: a WAV, the tiny model, delay keys, quit; read the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from tui.journal import read_journal

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.slow,  # ~25 s: model load and a real-time WAV
]
ROOT = Path(__file__).resolve().parents[1]


class Pane:
    def __init__(self, name: str) -> None:
        self.name = name

    def text(self) -> str:
        done = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return done.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s  # a limit for a hung run, not a speed assertion
        screen = ""
        while time.monotonic() < deadline:
            screen = self.text()
            if condition(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    name = f"voxcap-test-{os.getpid()}"
    yield Pane(name)
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_tui_in_tmux(pane: Pane, tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.tiny_model import synthetic_speechlike

    wav = tmp_path / "speech.wav"
    sf.write(wav, synthetic_speechlike(12.0), 16000)
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "config.yaml").write_text("pause_s: 0.24\nmax_segment_s: 1.0\n")
    voxcap = shutil.which("voxcap")
    program = [voxcap] if voxcap else [sys.executable, "-m", "tui.cli"]
    command = " ".join(
        [
            f"cd {shlex.quote(str(ROOT))} &&",
            f"env VOXCAP_CONFIG_DIR={shlex.quote(str(config))} VOXCAP_DATA_DIR={shlex.quote(str(data))}",
            "TERM=xterm-256color",
            *map(shlex.quote, program),
            shlex.quote(str(wav)),
            f"--model {shlex.quote(str(tiny_model_dir))} --compute-device cpu --dtype float32;",
            "echo VOXCAP-EXIT=$?; sleep 60",
        ]
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", pane.name, "-x", "120", "-y", "32", command], check=True)

    screen = pane.wait_for(lambda s: "● LIVE" in s or "NO SPEECH" in s or "END OF INPUT" in s, "captioning")
    assert "voxcap" in screen and "Delay 480 ms (default)" in screen
    pane.wait_for(lambda s: "00:00:0" in s, "a caption line with its audio time")
    pane.keys("]", "]")
    screen = pane.wait_for(lambda s: "Delay 640 ms" in s, "the delay slider at 640 ms")
    pane.keys("[")
    pane.wait_for(lambda s: "Delay 560 ms" in s, "the delay slider at 560 ms")
    pane.keys("q")
    screen = pane.wait_for(lambda s: "VOXCAP-EXIT=" in s, "voxcap to quit")
    assert "VOXCAP-EXIT=0" in screen, screen
    assert "transcript saved to" in screen
    journals = list((data / "sessions").glob("*.jsonl"))
    assert len(journals) == 1
    contents = read_journal(journals[0])
    assert contents.ended_cleanly and contents.header.delay_ms == 480
    assert yaml.safe_load((config / "config.yaml").read_text())["delay_ms"] == 560  # persisted


def test_tui_reads_keys_from_the_terminal_while_audio_comes_on_stdin(
    pane: Pane, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`... | voxcap --stdin` on a terminal: the pipe is the audio, the keyboard still works."""
    from tests.tiny_model import synthetic_speechlike

    wav = tmp_path / "speech.wav"
    sf.write(wav, synthetic_speechlike(6.0), 16000)
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    (config / "config.yaml").write_text("pause_s: 0.24\nmax_segment_s: 1.0\n")
    command = " ".join(
        [
            f"cd {shlex.quote(str(ROOT))} &&",
            f"cat {shlex.quote(str(wav))} |",
            f"env VOXCAP_CONFIG_DIR={shlex.quote(str(config))} VOXCAP_DATA_DIR={shlex.quote(str(data))}",
            "TERM=xterm-256color",
            shlex.quote(sys.executable),
            "-m tui.cli --stdin",
            f"--model {shlex.quote(str(tiny_model_dir))} --compute-device cpu --dtype float32;",
            "echo VOXCAP-EXIT=$?; sleep 60",
        ]
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", pane.name, "-x", "120", "-y", "32", command], check=True)
    pane.wait_for(lambda s: "END OF INPUT" in s and "00:00:0" in s, "the piped audio captioned to its end")
    pane.keys("t")  # a key from the keyboard reaches the app: the theme changes (persisted below)
    pane.wait_for(lambda s: "Theme: high-contrast" in s, "the theme toast")
    pane.keys("q")
    screen = pane.wait_for(lambda s: "VOXCAP-EXIT=" in s, "voxcap to quit")
    assert "VOXCAP-EXIT=0" in screen, screen
    assert yaml.safe_load((config / "config.yaml").read_text())["theme"] == "high-contrast"
