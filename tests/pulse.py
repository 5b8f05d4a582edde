"""A private PulseAudio server for tests: null sinks instead of sound cards.

``PulseServer`` starts ``pulseaudio`` in the foreground (we own its pid) with its own runtime
directory and socket, loads null sinks, makes one the default sink and its monitor the default
source, and points this process at it through ``PULSE_SERVER`` (so PortAudio's ``pulse`` and
``default`` ALSA devices, ``pactl``, ``parec`` and ``paplay`` all use it). Audio played into a
null sink with ``paplay`` comes out of its monitor, which is both the "system audio" and,
as the default source, the "microphone".

Use the ``pulse_server`` fixture (session scope): ``from tests.pulse import pulse_server_fixture``
(or a conftest that imports it).
Tests that use it are marked ``@pytest.mark.audio``; it skips them, with the reason, where no
server can start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SINK = "voxcap_test_sink"  # the default sink: "system audio"
MIC_SINK = "voxcap_test_mic"  # a second sink whose monitor can play the microphone's part


class PulseUnavailable(RuntimeError):
    """The PulseAudio server could not be started here."""


class PulseServer:
    """One pulseaudio daemon with null sinks, for the life of a test session."""

    def __init__(self, sink_rate: int = 48_000, mic_rate: int = 44_100) -> None:
        self.sink_rate = sink_rate
        self.mic_rate = mic_rate
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="voxcap-pulse-"))
        self.socket = self.runtime_dir / "native"
        self.server = f"unix:{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}
        self._log = self.runtime_dir / "pulseaudio.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for child processes (paplay, parec, pactl) that talk to this server."""
        return {**os.environ, **self._env_overrides()}

    def _env_overrides(self) -> dict[str, str]:
        # Clients need only the socket (anonymous auth: no cookie) and no autospawn; the rest of
        # the environment (XDG_RUNTIME_DIR included) stays as the other tests expect it.
        return {"PULSE_SERVER": self.server, "PULSE_CLIENTCONFIG": str(self.runtime_dir / "client.conf")}

    def start(self) -> None:
        if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
            raise PulseUnavailable("pulseaudio or pactl is not installed (apt install pulseaudio pulseaudio-utils)")
        (self.runtime_dir / "client.conf").write_text("autospawn = no\n")
        command = [
            "pulseaudio",
            "-n",  # no default.pa: no hardware probing, only the modules below
            "--daemonize=no",
            "--system=false",  # also as root (CI containers): a per-user server
            "--exit-idle-time=-1",
            "--disallow-exit=false",
            "--use-pid-file=false",
            "--log-target=file:" + str(self._log),
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            f"--load=module-null-sink sink_name={SINK} rate={self.sink_rate} channels=2",
            f"--load=module-null-sink sink_name={MIC_SINK} rate={self.mic_rate} channels=1",
        ]
        env = {
            **os.environ,
            "PULSE_RUNTIME_PATH": str(self.runtime_dir),  # its pid/lock files: apart from any other
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "HOME": str(self.runtime_dir),  # its cookie and state
        }
        env.pop("PULSE_SERVER", None)  # the server itself must not try to connect anywhere
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self._log.read_text(errors="replace")[-400:] if self._log.exists() else ""
                raise PulseUnavailable(f"pulseaudio exited with code {self.process.returncode}: {log}")
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            self.stop()
            raise PulseUnavailable("pulseaudio did not answer within 15 s")
        self.set_default_source(f"{SINK}.monitor")
        self.pactl("set-default-sink", SINK)
        for key, value in self._env_overrides().items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def stop(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def set_default_source(self, name: str) -> None:
        self.pactl("set-default-source", name)

    def load_null_sink(self, name: str, rate: int = 48_000, channels: int = 2) -> int:
        """Add a null sink; returns the module index (for :meth:`unload_module`)."""
        out = self.pactl("load-module", "module-null-sink", f"sink_name={name}", f"rate={rate}", f"channels={channels}")
        return int(out.stdout.strip())

    def unload_module(self, module: int) -> None:
        self.pactl("unload-module", str(module))

    def play(self, wav: Path, sink: str = SINK) -> subprocess.Popen[bytes]:
        """Start ``paplay`` of ``wav`` into ``sink``; the caller waits on the process."""
        return subprocess.Popen(
            ["paplay", f"--device={sink}", str(wav)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )


@pytest.fixture(scope="session", name="pulse_server")
def pulse_server_fixture() -> Iterator[PulseServer]:
    """A running private PulseAudio server (skips the test where none can start)."""
    server = PulseServer()
    try:
        server.start()
    except (PulseUnavailable, OSError, RuntimeError) as error:
        server.stop()
        pytest.skip(f"no PulseAudio server for audio tests: {error}")
    # PortAudio lists devices once, when initialized; re-scan so the pulse devices appear.
    with contextlib.suppress(ImportError, OSError):
        import sounddevice

        sounddevice._terminate()
        sounddevice._initialize()
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(ImportError, OSError):
            import sounddevice

            sounddevice._terminate()
            sounddevice._initialize()


@pytest.fixture
def portaudio_pulse(pulse_server: PulseServer) -> PulseServer:
    """The server, once PortAudio can reach it (its ALSA ``pulse`` device comes from the plugin)."""
    from tui.errors import AudioSourceError
    from tui.sources import list_input_devices

    try:
        names = {device.name for device in list_input_devices()}
    except AudioSourceError as error:
        pytest.skip(f"PortAudio is unavailable: {error}")
    if "pulse" not in names:
        pytest.skip("PortAudio lists no 'pulse' device: install libasound2-plugins (ALSA's pulse plugin)")
    return pulse_server


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short espeak-ng recording (skips without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "Live captions in your terminal. The quick brown fox jumps."],
        check=True,
    )
    return path


def best_alignment(captured: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Where ``reference`` sits in ``captured`` (may be negative: the capture began late) and
    the normalized correlation over the part they share."""
    size = 1 << int(np.ceil(np.log2(len(captured) + len(reference))))
    xcorr = np.fft.irfft(np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(xcorr))
    if lag >= size - len(reference):
        lag -= size  # a negative shift wraps around the circular correlation
    segment, ref = overlap(captured, reference, lag)
    return lag, float(np.dot(segment, ref) / (np.linalg.norm(segment) * np.linalg.norm(ref) + 1e-12))


def overlap(captured: np.ndarray, reference: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    start = max(lag, 0)
    ref = reference[start - lag :]
    segment = captured[start : start + len(ref)]
    return segment, ref[: len(segment)]
