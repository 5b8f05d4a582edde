"""System audio on Linux: the monitor source of a PulseAudio/PipeWire sink ("what you hear").

PortAudio does not list monitor sources. Two known ways around that: set ``PULSE_SOURCE`` and
open PortAudio's ``pulse`` ALSA device, or record with ``parec`` in a subprocess. We use
``parec`` (``pw-record`` where only PipeWire's tools exist) because:
  * ``PULSE_SOURCE`` is process-wide, read when a stream connects; a microphone and a monitor
    open at the same time (the mixed input) would race for it, and the ``pulse`` ALSA device
    needs libasound2-plugins, which many systems lack;
  * the device is named explicitly on the command line, with the rate and format we ask for;
  * a sound server that dies ends the subprocess, with an exit code and a message on stderr,
    instead of wedging a PortAudio thread inside our process; a sink that disappears makes the
    server move the stream to another source, which parec reports, so we can end with a clear
    message rather than go on silently capturing something else;
  * reading its stdout is plain asyncio, with backpressure, and no PortAudio needed at all.
Sources are listed with ``pactl`` (JSON where it supports it, else ``list short``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import numpy as np

from tui.audio import MonoResampler
from tui.errors import AudioSourceError
from tui.sources.base import DEFAULT_MAX_QUEUE_S, DEVICE_HINT, AudioSource

TOOLS_HINT = "install PulseAudio's tools: `apt install pulseaudio-utils` (they work with PipeWire too)"
_PACTL_TIMEOUT_S = 5.0
_SPEC = re.compile(r"(?P<format>\S+)\s+(?P<channels>\d+)ch\s+(?P<rate>\d+)Hz")


@dataclass(frozen=True)
class PulseSource:
    """A PulseAudio/PipeWire source; a monitor source carries the sound of a sink."""

    index: int
    name: str
    description: str
    rate: int  # Hz, the source's native rate
    channels: int
    sample_format: str  # as the server says, e.g. "s16le", "float32le"
    monitor_of: str | None  # the sink's name for a monitor source, else None

    @property
    def is_monitor(self) -> bool:
        return self.monitor_of is not None


def _pactl(*args: str) -> str:
    if shutil.which("pactl") is None:
        raise AudioSourceError(f"System audio needs `pactl`; {TOOLS_HINT}")
    try:
        done = subprocess.run(
            ["pactl", *args],
            capture_output=True,
            text=True,
            timeout=_PACTL_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},  # labels like "Default Sink:" are translated
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        command = " ".join(args)
        raise AudioSourceError(f"`pactl {command}` did not answer in {_PACTL_TIMEOUT_S:.0f} s") from error
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = lines[-1] if lines else "pactl failed"
        raise AudioSourceError(
            f"Cannot reach the PulseAudio/PipeWire sound server ({why}); "
            "is one running? Check with `pactl info`"
        )
    return done.stdout


def _parse_spec(spec: str) -> tuple[str, int, int]:
    match = _SPEC.search(spec)
    if match is None:
        return "float32le", 2, 48_000
    return match["format"], int(match["channels"]), int(match["rate"])


def parse_sources_json(text: str) -> list[PulseSource]:
    """``pactl --format=json list sources`` -> sources."""
    sources = []
    for entry in json.loads(text):
        sample_format, channels, rate = _parse_spec(str(entry.get("sample_specification", "")))
        name = str(entry["name"])
        monitor_of = entry.get("monitor_source")
        is_monitor = entry.get("properties", {}).get("device.class") == "monitor" or name.endswith(".monitor")
        if not is_monitor or monitor_of in (None, "", "n/a"):
            monitor_of = name.removesuffix(".monitor") if is_monitor else None
        sources.append(
            PulseSource(
                index=int(entry["index"]),
                name=name,
                description=str(entry.get("description", "")),
                rate=rate,
                channels=channels,
                sample_format=sample_format,
                monitor_of=monitor_of,
            )
        )
    return sources


def parse_sources_short(text: str) -> list[PulseSource]:
    """``pactl list short sources`` (index, name, driver, spec, state; tab-separated) -> sources."""
    sources = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 4 or not fields[0].strip().isdigit():
            continue
        sample_format, channels, rate = _parse_spec(fields[3])
        name = fields[1]
        sources.append(
            PulseSource(
                index=int(fields[0]),
                name=name,
                description="",
                rate=rate,
                channels=channels,
                sample_format=sample_format,
                monitor_of=name.removesuffix(".monitor") if name.endswith(".monitor") else None,
            )
        )
    return sources


def list_pulse_sources() -> list[PulseSource]:
    """Every source the sound server has, monitors included. Raises AudioSourceError if none runs."""
    try:
        return parse_sources_json(_pactl("--format=json", "list", "sources"))
    except AudioSourceError:
        short = _pactl("list", "short", "sources")  # older pactl: no JSON; also re-raises "no server"
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        short = _pactl("list", "short", "sources")
    return parse_sources_short(short)


def default_sink() -> str | None:
    """The sound server's default sink (where programs play by default), if it has one."""
    for line in _pactl("info").splitlines():
        if line.startswith("Default Sink:"):
            name = line.split(":", 1)[1].strip()
            return name if name and name != "n/a" else None
    return None


def _sources_or_empty() -> list[PulseSource]:
    try:
        return list_pulse_sources()
    except AudioSourceError:
        return []


def list_monitor_sources() -> list[PulseSource]:
    return [source for source in list_pulse_sources() if source.is_monitor]


def resolve_system_source(device: str | None, sources: list[PulseSource], sink: str | None) -> PulseSource:
    """Pick a source: the default sink's monitor, or by pulse index, name, sink name or description."""
    monitors = [s for s in sources if s.is_monitor]
    if device is None or device.strip() == "":
        if not monitors:
            raise AudioSourceError(
                f"The sound server has no monitor sources to capture system audio from; {DEVICE_HINT}"
            )
        return next((s for s in monitors if sink is not None and s.monitor_of == sink), monitors[0])
    wanted = device.strip().removeprefix("#")
    if wanted.isdigit():
        match = next((s for s in sources if s.index == int(wanted)), None)
        if match is None:
            raise AudioSourceError(f"No sound-server source with index {wanted}; {DEVICE_HINT}")
        return match
    lowered = wanted.lower()
    for candidates in (
        [s for s in sources if s.name.lower() == lowered or (s.monitor_of or "").lower() == lowered],
        [s for s in monitors if lowered in s.name.lower() or lowered in s.description.lower()],
        [s for s in sources if lowered in s.name.lower() or lowered in s.description.lower()],
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            names = "; ".join(f"#{s.index}: {s.name}" for s in candidates)
            raise AudioSourceError(
                f"System audio source {device!r} is ambiguous ({names}); pick one by name or #index"
            )
    raise AudioSourceError(f"No sound-server source matches {device!r}; {DEVICE_HINT}")


def _recorder_command(source: PulseSource, latency_ms: int) -> list[str]:
    if shutil.which("parec"):
        return [
            "parec",
            f"--device={source.name}",
            "--format=float32le",
            f"--rate={source.rate}",
            f"--channels={source.channels}",
            "--raw",
            "--verbose",  # reports "Stream moved to device ..." on stderr; see _collect_stderr
            f"--latency-msec={latency_ms}",
            "--client-name=voxcap",
            "--stream-name=voxcap system audio",
        ]
    if shutil.which("pw-record"):
        return [
            "pw-record",
            f"--target={source.name}",
            "--format=f32",
            f"--rate={source.rate}",
            f"--channels={source.channels}",
            f"--latency={latency_ms}ms",
            "-",
        ]
    raise AudioSourceError(f"System audio needs `parec` or `pw-record`; {TOOLS_HINT}")


class SystemAudioSource(AudioSource):
    """What the machine plays (a sink's monitor), through ``parec``; 16 kHz mono chunks out."""

    kind = "system"

    def __init__(
        self,
        device: str | None = None,
        *,
        latency_ms: int = 20,
        block_ms: int = 20,
        max_queue_s: float = DEFAULT_MAX_QUEUE_S,
    ) -> None:
        super().__init__(max_queue_s=max_queue_s)
        self.requested = device
        self.source: PulseSource | None = None
        self.latency_ms = latency_ms
        self.block_ms = block_ms
        self._process: asyncio.subprocess.Process | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=5)
        self._stderr_task: asyncio.Task[None] | None = None
        self._vanished: str | None = None  # why the source is gone, when we noticed it

    def describe(self) -> str:
        if self.source is None:
            return f"System audio: {self.requested or 'monitor of the default output'}"
        label = f" ({self.source.description})" if self.source.description else ""
        return f"System audio: {self.source.name}{label}, {self.source.rate} Hz, {self.source.channels} ch"

    async def _open(self) -> None:
        sources, sink = await asyncio.to_thread(lambda: (list_pulse_sources(), default_sink()))
        self.source = resolve_system_source(self.requested, sources, sink)
        command = _recorder_command(self.source, self.latency_ms)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise AudioSourceError(
                f"Cannot start `{command[0]}` for system audio: {error}; {TOOLS_HINT}"
            ) from error
        self._stderr_task = asyncio.create_task(self._collect_stderr())

    async def _collect_stderr(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        # parec -v rewrites a status line with \r many times a second: read bytes, not lines.
        pending = ""
        while data := await process.stderr.read(4096):
            pending += data.decode(errors="replace")
            *lines, pending = re.split(r"[\r\n]", pending)
            for line in lines:
                await self._stderr_line(line.replace("\x1b[K", "").strip(), process)

    async def _stderr_line(self, line: str, process: asyncio.subprocess.Process) -> None:
        if line.startswith("Stream moved to device"):
            # Deliberate (a mixer app) if our source still exists; else it vanished and the
            # server rescued the stream onto another source: end, rather than mislabel it.
            names = {s.name for s in await asyncio.to_thread(_sources_or_empty)}
            if self.source is not None and self.source.name not in names:
                self._vanished = f"it disappeared; the server moved the stream to {line[23:].split(' (')[0]}"
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        elif line and not line.startswith(
            (
                "Time:",
                "Opening",
                "Connection established",
                "Stream succ",
                "Buffer metrics",
                "Using sample",
                "Connected to",
            )
        ):
            self._stderr.append(line)

    async def _pump(self) -> None:
        assert self._process is not None and self._process.stdout is not None and self.source is not None
        channels = self.source.channels
        frame_bytes = 4 * channels  # float32le
        block_bytes = max(1, self.source.rate * self.block_ms // 1000) * frame_bytes
        resampler = MonoResampler(self.source.rate)
        pending = b""
        while True:
            data = await self._process.stdout.read(block_bytes)
            if not data:
                break
            pending += data
            whole = len(pending) - len(pending) % frame_bytes
            if not whole:
                continue
            block = np.frombuffer(pending[:whole], dtype="<f4").reshape(-1, channels)  # [frames, channels]
            pending = pending[whole:]
            if self._paused:
                continue  # live input: what plays during a pause is not captioned
            self._offer(resampler.process(block), time.monotonic())
        code = await self._process.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stderr_task, 1.0)
        why = self._vanished or (self._stderr[-1] if self._stderr else f"exit code {code}")
        raise AudioSourceError(
            f"System audio from '{self.source.name}' stopped ({why}); the sink may be gone or the "
            f"sound server stopped; {DEVICE_HINT}"
        )

    async def _close(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task
