"""Microphone input through PortAudio (sounddevice), at the device's native rate.

PortAudio calls us on its own thread. The callback copies the block into a bounded, thread-safe
queue (dropping and counting when full) and wakes the asyncio loop with one
``call_soon_threadsafe`` per batch, never one per block: if the loop stalls, the pending wake-ups
do not pile up, so memory stays bounded. The loop side downmixes, resamples to 16 kHz and
queues chunks. sounddevice is imported only when a microphone is used, so file and stdin input
work on machines without libportaudio2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from tui.audio import MonoResampler
from tui.errors import AudioSourceError
from tui.sources.base import DEFAULT_MAX_QUEUE_S, DEVICE_HINT, AudioSource, run_blocking

PORTAUDIO_HINT = "install PortAudio (Debian/Ubuntu: `apt install libportaudio2`; Fedora: `dnf install portaudio`)"
_FALLBACK_RATES = (48_000, 44_100, 32_000, 16_000)  # tried when the advertised rate is refused
_OPEN_TIMEOUT_S = 10.0


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what C libraries write straight to file descriptor 2 for the duration.

    PortAudio's device scan makes ALSA print dozens of "ALSA lib pcm.c: Unknown PCM ..."
    lines on ordinary machines; written over a running full-screen app they wreck the display.
    Python-level stderr is untouched (it is the same descriptor, so keep the block short).
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield  # no descriptor 2 to protect
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_sounddevice() -> ModuleType:
    """sounddevice, or AudioSourceError saying to install PortAudio (its import raises OSError)."""
    try:
        if "sounddevice" in sys.modules:
            import sounddevice
        else:
            with quiet_native_stderr():  # the import initializes PortAudio: the device scan
                import sounddevice
    except OSError as error:
        raise AudioSourceError(f"Microphone input needs the PortAudio library: {PORTAUDIO_HINT} ({error})") from error
    except ImportError as error:
        raise AudioSourceError(
            f"Microphone input needs the sounddevice package: `pip install sounddevice` ({error})"
        ) from error
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio input device as `voxcap devices` lists it."""

    index: int
    name: str
    hostapi: str
    channels: int  # maximum input channels
    default_rate: float  # Hz, the device's native default
    is_default: bool


def list_input_devices(refresh: bool = False) -> list[InputDevice]:
    """PortAudio's input devices. ``refresh`` re-scans (hot-plug); only do it with no stream open."""
    sd = import_sounddevice()
    if refresh:
        refresh_portaudio(sd)
    try:
        default_input = sd.default.device[0]
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as error:
        raise AudioSourceError(f"PortAudio cannot list devices: {error}") from error
    if default_input is None or default_input < 0:
        defaults = [api["default_input_device"] for api in hostapis if api["default_input_device"] >= 0]
        default_input = defaults[0] if defaults else -1
    return [
        InputDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            hostapi=str(hostapis[info["hostapi"]]["name"]),
            channels=int(info["max_input_channels"]),
            default_rate=float(info["default_samplerate"]),
            is_default=int(info["index"]) == default_input,
        )
        for info in devices
        if info["max_input_channels"] > 0
    ]


def refresh_portaudio(sd: ModuleType | None = None) -> None:
    """Make PortAudio scan devices again (it lists them once, when initialized).

    Needed after a device is plugged in or a sound server started. sounddevice exposes no
    public call for this; its private terminate/initialize pair is the documented workaround.
    Only call it while no stream is open.
    """
    sd = sd or import_sounddevice()
    with quiet_native_stderr():
        sd._terminate()
        sd._initialize()


def resolve_input_device(device: str | int | None, devices: list[InputDevice]) -> InputDevice:
    """Pick an input by index, by name (exact, then unique case-insensitive substring), or the default."""
    if not devices:
        raise AudioSourceError(f"No audio input devices found (PortAudio lists none); {DEVICE_HINT}")
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if device is None:
        default = next((d for d in devices if d.is_default), None)
        if default is None:
            raise AudioSourceError(f"PortAudio has no default input device; {DEVICE_HINT}")
        return default
    if isinstance(device, int):
        match = next((d for d in devices if d.index == device), None)
        if match is None:
            indexes = ", ".join(str(d.index) for d in devices)
            raise AudioSourceError(f"No input device with index {device} (inputs: {indexes}); {DEVICE_HINT}")
        return match
    wanted = device.strip().lower()
    exact = [d for d in devices if d.name.lower() == wanted]
    if exact:
        return exact[0]
    partial = [d for d in devices if wanted in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise AudioSourceError(f"No input device matches {device!r}; {DEVICE_HINT}")
    names = "; ".join(f"{d.index}: {d.name}" for d in partial)
    raise AudioSourceError(f"Input device {device!r} is ambiguous ({names}); pick one by its index with --device")


class MicrophoneSource(AudioSource):
    """A PortAudio input device, opened at its native rate; 16 kHz mono chunks out."""

    kind = "mic"

    def __init__(
        self,
        device: str | int | None = None,
        *,
        block_ms: int = 20,
        max_queue_s: float = DEFAULT_MAX_QUEUE_S,
        stall_timeout_s: float | None = None,  # end the source after this long with no audio
    ) -> None:
        super().__init__(max_queue_s=max_queue_s)
        self.requested = device
        self.device: InputDevice | None = None  # the device opened, once started
        self.rate: int | None = None
        self.channels: int | None = None
        self.block_ms = block_ms
        self.stall_timeout_s = stall_timeout_s
        self._stream: Any = None
        self._resampler: MonoResampler | None = None
        # Filled on PortAudio's thread, drained on the loop: (block [frames, ch], t_capture).
        self._blocks: queue.Queue[tuple[np.ndarray, float]] = queue.Queue(maxsize=1)
        self._wake_pending = threading.Event()
        self._raw_dropped_frames = 0  # written by the callback thread only
        self._last_callback = 0.0
        self._stream_ended = threading.Event()

    @property
    def dropped_s(self) -> float:
        raw = self._raw_dropped_frames / self.rate if self.rate else 0.0
        return self._dropped_s + raw

    def describe(self) -> str:
        if self.device is None:
            return f"Microphone: {self.requested if self.requested is not None else 'default input'}"
        return (
            f"Microphone: {self.device.name} (#{self.device.index}, {self.device.hostapi}, "
            f"{self.rate} Hz, {self.channels} ch)"
        )

    def _device_label(self) -> str:
        if self.device is not None:
            return f"'{self.device.name}' (#{self.device.index})"
        return repr(self.requested) if self.requested is not None else "the default input"

    async def _open(self) -> None:
        # The first import initializes PortAudio, which scans every device (can take a while).
        sd = await asyncio.to_thread(import_sounddevice)
        self.device = resolve_input_device(self.requested, await asyncio.to_thread(list_input_devices))
        self._loop = asyncio.get_running_loop()
        native = int(round(self.device.default_rate))
        rates = [native, *[r for r in _FALLBACK_RATES if r != native]]
        channels = [min(self.device.channels, 2)]
        if self.device.channels not in channels:
            channels.append(self.device.channels)  # some hw devices only open with all channels
        max_blocks = max(2, int(self.max_queue_s * 1000 / self.block_ms))
        self._blocks = queue.Queue(maxsize=max_blocks)
        last_error: Exception | None = None
        for rate in rates:
            for count in channels:
                try:
                    self._stream = await run_blocking(
                        lambda r=rate, c=count: self._open_stream(sd, r, c),
                        _OPEN_TIMEOUT_S,
                        "opening the microphone",
                    )
                except (sd.PortAudioError, ValueError) as error:  # ValueError: settings it rejects
                    last_error = error
                    continue
                return
        raise AudioSourceError(f"Cannot open microphone {self._device_label()}: {last_error}; {DEVICE_HINT}")

    def _open_stream(self, sd: ModuleType, rate: int, channels: int) -> Any:
        assert self.device is not None
        stream = sd.InputStream(
            device=self.device.index,
            samplerate=rate,
            channels=channels,
            dtype="float32",
            blocksize=max(1, rate * self.block_ms // 1000),
            callback=self._callback,
            finished_callback=self._stream_ended.set,
        )
        # Ready for the first callback before the stream starts calling.
        self.rate, self.channels = rate, channels
        self._resampler = MonoResampler(rate)
        self._last_callback = time.monotonic()
        try:
            stream.start()
        except BaseException:
            stream.close()
            raise
        return stream

    # Runs on PortAudio's thread: copy, queue, wake the loop. Nothing that can block.
    def _callback(self, indata: np.ndarray, frames: int, _time_info: Any, status: Any) -> None:
        now = time.monotonic()
        self._last_callback = now
        if status.input_overflow:
            self.overflows += 1
        try:
            self._blocks.put_nowait((indata.copy(), now))  # [frames, channels]
        except queue.Full:
            self._raw_dropped_frames += frames
        if not self._wake_pending.is_set():
            self._wake_pending.set()
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._wake_pending.clear()  # before draining: a block queued from now on wakes us again
        while True:
            try:
                block, t_capture = self._blocks.get_nowait()
            except queue.Empty:
                return
            if self._paused or self._resampler is None:
                continue  # paused live input: discard, it is not a drop
            self._offer(self._resampler.process(block), t_capture)

    @property
    def seconds_since_audio(self) -> float:
        """How long PortAudio has not called back (0 while audio flows)."""
        return max(0.0, time.monotonic() - self._last_callback) if self._stream is not None else 0.0

    async def _pump(self) -> None:
        # PortAudio reports an unplugged device or a dead sound server by ending the stream.
        # A stream that merely stops calling back is not an error by default: a PulseAudio or
        # PipeWire source (a monitor, a virtual device) may send no data while nothing plays.
        period = 0.25 if self.stall_timeout_s is None else min(0.25, self.stall_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            stream = self._stream
            if self._stream_ended.is_set() or (stream is not None and not stream.active):
                raise AudioSourceError(
                    f"Microphone {self._device_label()} stopped (unplugged, or its sound server gone?); {DEVICE_HINT}"
                )
            silent_for = self.seconds_since_audio
            if self.stall_timeout_s is not None and silent_for > self.stall_timeout_s:
                raise AudioSourceError(
                    f"Microphone {self._device_label()} delivered no audio for {silent_for:.1f} s "
                    f"(unplugged or its sound server gone?); {DEVICE_HINT}"
                )

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._drain()  # what PortAudio already delivered is kept
        try:
            await run_blocking(stream.close, 5.0, "closing the microphone")
        except AudioSourceError:
            pass  # a wedged driver: the daemon thread is abandoned; the source ends anyway
        except Exception:  # PortAudioError from a device already gone: nothing left to release
            pass
        if self._resampler is not None and not self._paused:
            self._offer(self._resampler.flush(), time.monotonic())
