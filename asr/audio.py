"""Audio front end: input checks, resampling to 16 kHz, and the log-mel features, whole or incremental.

The features are exactly those of the reference feature extractor: periodic Hann window of 400,
hop 160, centred frames (reflect padding), power spectrum with the last STFT frame dropped, a
Slaney-scale, Slaney-normalised filterbank of 128 mels over 0..8 kHz, ``log10(max(x, 1e-10))``
floored at ``1.5 - 8``, then ``(x + 4) / 4``.

Streaming works on the padded stream: 40 960 zeros of left pad, then the audio, then (at the end)
the right pad. Mel frame t is centred on padded sample 160 t and reads samples [160 t - 200,
160 t + 200); samples before 0 are zeros, which is what reflect padding of the zero left pad gives.
So frame t can be computed as soon as sample 160 t + 199 has arrived, and the frames computed
chunk by chunk are the frames of the whole clip.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from asr.errors import AudioError

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms window
HOP = 160  # 10 ms, so 100 mel frames per second
N_MELS = 128
LOG_MEL_MAX = 1.5  # fixed global maximum (no per-utterance max): the floor is 1.5 - 8 = -6.5
FRAMES_PER_TOKEN = 8  # 80 ms per decoder token
SAMPLES_PER_TOKEN = HOP * FRAMES_PER_TOKEN  # 1280
LEFT_PAD_TOKENS = 32  # 2.56 s of zeros before the audio ("more compute" for the first words)
RIGHT_PAD_EXTRA_TOKENS = 11  # the BOS slot + a 10-token "longest word" buffer, after the delay
HALF_WINDOW = N_FFT // 2  # 200: a frame reaches this far past its centre
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000


def slaney_mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, f_max: float = 8000.0
) -> torch.Tensor:
    """[n_mels, n_freqs] float32 triangles on the Slaney mel scale with Slaney area normalisation."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        linear = 3.0 * f / 200.0
        log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
        return np.where(f >= 1000.0, log_part, linear)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        linear = 200.0 * m / 3.0
        log_part = 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0)
        return np.where(m >= 15.0, log_part, linear)

    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2))  # [n_mels + 2]
    bins = np.linspace(0, SAMPLE_RATE // 2, n_freqs)  # FFT bin centres, [n_freqs]
    widths = np.diff(edges)  # [n_mels + 1]
    offsets = edges[None, :] - bins[:, None]  # [n_freqs, n_mels + 2]
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    triangles = np.maximum(0.0, np.minimum(rising, falling))  # [n_freqs, n_mels]
    triangles *= 2.0 / (edges[2 : n_mels + 2] - edges[:n_mels])  # equal area per filter
    return torch.from_numpy(triangles.T.copy()).float()


class LogMel:
    """Log-mel features from frames of the padded stream; holds the window and filterbank."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.window = torch.hann_window(N_FFT, periodic=True, device=self.device)
        self.filters = slaney_mel_filterbank().to(self.device)  # [128, 201]

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """samples [S] float32 whose first sample starts frame 0 -> features [128, (S - 400)//160 + 1]."""
        spec = torch.stft(
            samples, N_FFT, HOP, window=self.window, center=False, return_complex=True
        )  # [201, n]
        power = spec.abs() ** 2
        mel = self.filters @ power  # [128, n]
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, torch.tensor(LOG_MEL_MAX - 8.0, device=log_spec.device))
        return (log_spec + 4.0) / 4.0

    def whole(self, audio: torch.Tensor) -> torch.Tensor:
        """Features of a complete (already padded) clip [S] -> [128, S // 160], as the reference computes."""
        padded = torch.nn.functional.pad(audio[None, None], (HALF_WINDOW, HALF_WINDOW), mode="reflect")[0, 0]
        return self.frames(padded)[:, : audio.shape[0] // HOP]


class MelStream:
    """Incremental log-mel over the padded stream; ``push`` returns the frames that became computable."""

    def __init__(self, logmel: LogMel) -> None:
        self.logmel = logmel
        # Samples from padded index -200 onwards that later frames still need; zeros before 0.
        self._buffer = np.zeros(HALF_WINDOW, dtype=np.float32)
        self.next_frame = 0  # index of the next mel frame to compute

    def push(self, samples: np.ndarray) -> torch.Tensor:
        """Append padded-stream samples [n] float32; returns new frames [128, k] (k may be 0)."""
        if samples.size:
            self._buffer = np.concatenate((self._buffer, samples.astype(np.float32, copy=False)))
        n_frames = (self._buffer.shape[0] - N_FFT) // HOP + 1 if self._buffer.shape[0] >= N_FFT else 0
        if n_frames <= 0:
            return torch.empty(N_MELS, 0, device=self.logmel.device)
        used = (n_frames - 1) * HOP + N_FFT
        chunk = torch.from_numpy(self._buffer[:used]).to(self.logmel.device)
        features = self.logmel.frames(chunk)  # [128, n_frames]
        self._buffer = self._buffer[n_frames * HOP :].copy()  # frame t + 1 starts 160 samples later
        self.next_frame += n_frames
        return features


def as_mono_float32(samples: object, sample_rate: object) -> tuple[np.ndarray, int]:
    """Check caller audio and convert it: 1-D, finite, float (or integer PCM, scaled to [-1, 1))."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        if isinstance(sample_rate, float) and sample_rate.is_integer():
            sample_rate = int(sample_rate)
        else:
            raise AudioError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"sample_rate {sample_rate} Hz is not a plausible audio rate; pass the rate the audio was "
            f"recorded at ({MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, usually 16000, 44100 or 48000)"
        )
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        try:
            samples = np.asarray(samples)
        except (TypeError, ValueError) as error:
            raise AudioError(
                f"audio must be a 1-D numpy array of samples, got {type(samples).__name__}"
            ) from error
    if samples.ndim != 1:
        raise AudioError(
            f"audio must be 1-D (mono samples), got shape {samples.shape}; "
            "downmix channels first, e.g. samples.mean(axis=1)"
        )
    kind = samples.dtype.kind
    if kind == "f":
        out = samples.astype(np.float32, copy=False)
    elif samples.dtype == np.int16:
        out = samples.astype(np.float32) / 32768.0
    elif samples.dtype == np.int32:
        out = samples.astype(np.float32) / 2147483648.0
    elif samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        out = (samples.astype(np.float32) - 128.0) / 128.0
    else:
        raise AudioError(
            f"audio dtype {samples.dtype} cannot be converted to samples; pass float32 in [-1, 1] "
            "(or int16/int32/uint8 PCM)"
        )
    if out.size and not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise AudioError(f"audio contains {bad} NaN or infinite samples; clean or drop that chunk")
    return out, sample_rate


class Resampler:
    """Streaming resampler to 16 kHz (soxr, high quality); a pass-through at 16 kHz."""

    def __init__(self) -> None:
        self.rate: int | None = None
        self._stream: object | None = None

    def push(self, samples: np.ndarray, rate: int) -> np.ndarray:
        out = []
        if rate != self.rate:
            out.append(self.flush())
            self.rate = rate
            if rate != SAMPLE_RATE:
                import soxr

                self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        if self._stream is None:
            out.append(samples)
        else:
            out.append(self._stream.resample_chunk(samples))  # type: ignore[attr-defined]
        return np.concatenate(out) if len(out) > 1 else out[0]

    def flush(self) -> np.ndarray:
        """Drain the resampler's tail (end of stream or a rate change)."""
        tail = np.zeros(0, dtype=np.float32)
        if self._stream is not None:
            tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)  # type: ignore[attr-defined]
        self._stream, self.rate = None, None
        return tail.astype(np.float32, copy=False)


def right_pad_samples(n_audio: int, delay_tokens: int) -> int:
    """Zeros appended at the end: align the audio to 1280 samples, then (delay + 11) tokens."""
    align = (SAMPLES_PER_TOKEN - n_audio % SAMPLES_PER_TOKEN) % SAMPLES_PER_TOKEN
    return align + (delay_tokens + RIGHT_PAD_EXTRA_TOKENS) * SAMPLES_PER_TOKEN


def total_tokens(n_audio: int, delay_tokens: int) -> int:
    """Decoder positions of a finished stream of ``n_audio`` samples: left pad + audio + right pad."""
    return LEFT_PAD_TOKENS + math.ceil(n_audio / SAMPLES_PER_TOKEN) + delay_tokens + RIGHT_PAD_EXTRA_TOKENS
