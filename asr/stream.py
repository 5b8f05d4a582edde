"""StreamingSession: feed audio of any size and rate, get tokens as soon as the model emits them.

Synchronous, no threads. The session owns one :class:`~asr.inner.ModelStream` at a time. A
stream's delay is fixed and its positions are limited, so the session *rolls over*: it finishes
the current model stream exactly where the input has reached (right pad, delayed text flushed)
and starts a new one on the following samples. No sample is skipped or fed twice, so nothing is
lost or transcribed twice. Rollovers happen

* for a delay change, at the next pause in the input (or after ``max_wait_s`` of audio);
* before the model's position limit (131 072 tokens, about 2.9 h), at a pause if one comes;
* when the model emits EOS mid-stream, on the audio after the last slot it consumed;
* on request (``restart()``), at once.

Times are on the input's own clock: seconds of audio fed since the session started (or reset).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from asr.audio import LEFT_PAD_TOKENS, SAMPLE_RATE, SAMPLES_PER_TOKEN, Resampler, as_mono_float32
from asr.errors import DelayError, SessionError
from asr.inner import ModelStream, Step
from asr.pause import PauseDetector
from asr.tokens import Token

MIN_DELAY_MS, MAX_DELAY_MS, DELAY_STEP_MS, DEFAULT_DELAY_MS = 80, 2400, 80, 480
TOKEN_S = SAMPLES_PER_TOKEN / SAMPLE_RATE  # 0.08
STATS_WINDOW = 1024  # recent per-step timings kept for percentiles


def prompt_samples(delay_ms: int) -> int:
    """The audio samples that complete a stream's prompt, so its first id comes out."""
    return (delay_ms // 80 + 1) * SAMPLES_PER_TOKEN + 40


def delay_tokens_for(delay_ms: object) -> int:
    """80..2400 ms in steps of 80 -> 1..30 tokens; anything else is a DelayError."""
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, np.integer)):
        raise DelayError(f"delay must be an integer number of milliseconds, got {delay_ms!r}")
    delay_ms = int(delay_ms)
    if not MIN_DELAY_MS <= delay_ms <= MAX_DELAY_MS or delay_ms % DELAY_STEP_MS:
        raise DelayError(
            f"delay {delay_ms} ms is not supported: use a multiple of {DELAY_STEP_MS} ms from "
            f"{MIN_DELAY_MS} to {MAX_DELAY_MS} (480 is the recommended default)"
        )
    return delay_ms // DELAY_STEP_MS


@dataclass(frozen=True, slots=True)
class StreamEvent:
    kind: str  # "rollover"
    audio_s: float  # input time at which the new model stream starts
    delay_ms: int  # delay in force from there on
    reason: str  # "delay_change", "position_limit", "eos", "restart"


@dataclass
class SessionStats:
    steps: int = 0  # decoder positions run
    encoder_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))  # per 80 ms token
    decoder_ms: deque[float] = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))  # per position
    audio_s: float = 0.0  # input seconds fed
    position: int = 0  # decoder position of the current model stream
    rollovers: int = 0


@dataclass
class _PendingRollover:
    reason: str
    delay_tokens: int
    deadline_samples: int  # input sample count at which it happens even without a pause


class StreamingSession:
    def __init__(self, model: object, delay_ms: int = DEFAULT_DELAY_MS) -> None:
        self.model = model
        self._delay_tokens = delay_tokens_for(delay_ms)
        self._logits_hook: Callable[[torch.Tensor], None] | None = None
        self.reset()

    # ----------------------------------------------------------------- public API
    @property
    def logits_hook(self) -> Callable[[torch.Tensor], None] | None:
        """Called with each step's logits [1, vocab] before the argmax (tests and diagnostics;
        setting it turns off CUDA-graph replay, which never materialises logits on the host)."""
        return self._logits_hook

    @logits_hook.setter
    def logits_hook(self, hook: Callable[[torch.Tensor], None] | None) -> None:
        self._logits_hook = hook
        if hasattr(self, "_inner"):
            self._inner.logits_hook = self._on_logits if hook is not None else None

    @property
    def delay_ms(self) -> int:
        return self._inner.delay_tokens * DELAY_STEP_MS

    @property
    def audio_s(self) -> float:
        return self._samples_in / SAMPLE_RATE

    @property
    def finished(self) -> bool:
        return self._finished

    def reset(self, delay_ms: int | None = None) -> None:
        """Drop all state and start a fresh stream; the audio clock restarts at 0."""
        if delay_ms is not None:
            self._delay_tokens = delay_tokens_for(delay_ms)
        self._resampler = Resampler()
        self._decoder = self.model.tokenizer.decoder()
        self._samples_in = 0  # 16 kHz samples received (after resampling)
        self._recent = np.zeros(0, dtype=np.float32)  # tail of the current stream's input, for EOS restarts
        self._pending: _PendingRollover | None = None
        self._pauses = PauseDetector()
        self._events: list[StreamEvent] = []
        self.stats = SessionStats()
        self._finished = False
        self._inner = self._new_inner(0, self._delay_tokens)

    def feed(self, samples: object, sample_rate: int = SAMPLE_RATE) -> list[Token]:
        """Feed audio (1-D, any length, any rate); returns the tokens emitted as a result, in order."""
        if self._finished:
            raise SessionError("this session is finished; call reset() to start a new stream")
        audio, rate = as_mono_float32(samples, sample_rate)
        return self._push(self._resampler.push(audio, rate))

    def finish(self) -> list[Token]:
        """End of input: flush the resampler and the model (right pad), returning the last tokens."""
        if self._finished:
            return []
        tokens = self._push(self._resampler.flush())
        tokens += self._end_inner()
        self._finished = True
        self._collect_timings()
        return tokens

    def set_delay(self, delay_ms: int, max_wait_s: float = 2.5) -> None:
        """Change the delay at the next pause (or after ``max_wait_s`` of audio): the stream rolls over."""
        tokens = delay_tokens_for(delay_ms)
        if tokens == self._inner.delay_tokens and self._pending is None:
            return
        self._delay_tokens = tokens
        self._schedule("delay_change", tokens, max_wait_s)

    def restart(self) -> None:
        """Roll the stream over before the next sample (a watchdog's remedy); nothing is lost."""
        self._schedule("restart", self._delay_tokens, 0.0)

    def pop_events(self) -> list[StreamEvent]:
        events, self._events = self._events, []
        return events

    # ----------------------------------------------------------------- internals
    def _new_inner(self, offset_samples: int, delay_tokens: int) -> ModelStream:
        inner = ModelStream(self.model, delay_tokens)
        if self.logits_hook is not None:
            inner.logits_hook = self._on_logits
        self._offset = offset_samples  # input sample where this stream's audio starts
        self._recent = np.zeros(0, dtype=np.float32)
        return inner

    def _on_logits(self, logits: torch.Tensor) -> None:
        if self._logits_hook is not None:
            self._logits_hook(logits)

    def _schedule(self, reason: str, delay_tokens: int, max_wait_s: float) -> None:
        deadline = self._samples_in + int(max_wait_s * SAMPLE_RATE)
        if self._pending is not None:
            deadline = min(deadline, self._pending.deadline_samples)
            if self._pending.reason == "delay_change" and reason == "restart":
                reason = "delay_change"  # the restart also applies the new delay
        self._pending = _PendingRollover(reason, delay_tokens, deadline)

    def _push(self, audio: np.ndarray) -> list[Token]:
        """Feed 16 kHz samples, in pieces small enough to roll over at the right sample."""
        tokens: list[Token] = []
        pos = 0
        while pos < audio.shape[0]:
            self._check_position_limit()
            if self._pending is not None:
                if self._pending.deadline_samples <= self._samples_in or self._pauses.quiet():
                    tokens += self._rollover()
                    continue
                # Step one token at a time so the pause check sees every 80 ms; stop at the deadline.
                piece = SAMPLES_PER_TOKEN - self._samples_in % SAMPLES_PER_TOKEN
                piece = min(piece, self._pending.deadline_samples - self._samples_in)
            else:
                # Up to the point where the position limit needs watching (never mid-limit).
                piece = max(SAMPLES_PER_TOKEN, self._samples_before_limit_watch())
            chunk = audio[pos : pos + piece]
            pos += chunk.shape[0]
            tokens += self._push_piece(chunk)
        self._collect_timings()
        return tokens

    def _push_piece(self, chunk: np.ndarray) -> list[Token]:
        self._samples_in += chunk.shape[0]
        self._pauses.push(chunk)
        self._recent = np.concatenate((self._recent, chunk))[-RECENT_SAMPLES:]
        steps = self._inner.push(chunk)
        tokens = self._emit(steps)
        if self._inner.done:  # EOS: restart on the audio the decoder had not consumed yet
            tokens += self._restart_after_eos()
        return tokens

    def _rollover(self) -> list[Token]:
        pending, self._pending = self._pending, None
        assert pending is not None
        tokens = self._end_inner()
        self._inner = self._new_inner(self._samples_in, pending.delay_tokens)
        self._events.append(StreamEvent("rollover", self.audio_s, self.delay_ms, pending.reason))
        self.stats.rollovers += 1
        return tokens

    def _end_inner(self) -> list[Token]:
        """Finish the current model stream; a character left incomplete is flushed into the last token."""
        tokens = self._emit(self._inner.finish())
        tail = self._decoder.flush()
        if tail and tokens:
            tokens[-1] = replace(tokens[-1], text=tokens[-1].text + tail)
        return tokens

    def _restart_after_eos(self) -> list[Token]:
        inner = self._inner
        consumed = max(0, (inner.next_pos - LEFT_PAD_TOKENS) * SAMPLES_PER_TOKEN)  # real samples seen
        unconsumed = max(0, min(inner.n_real - consumed, self._recent.shape[0]))
        replay = self._recent[self._recent.shape[0] - unconsumed :] if unconsumed else self._recent[:0]
        self._collect_timings()
        self._inner = self._new_inner(self._samples_in - unconsumed, self._delay_tokens)
        self._events.append(StreamEvent("rollover", self._offset / SAMPLE_RATE, self.delay_ms, "eos"))
        self.stats.rollovers += 1
        self._recent = replay.copy()
        return self._emit(self._inner.push(replay)) if replay.size else []

    def _samples_before_limit_watch(self) -> int:
        """Samples that can be fed before the position limit's soft zone begins."""
        inner = self._inner
        room_tokens = inner.max_positions - _soft_margin(inner.max_positions) - inner.projected_positions()
        return max(0, room_tokens) * SAMPLES_PER_TOKEN

    def _check_position_limit(self) -> None:
        inner = self._inner
        room = inner.max_positions - inner.projected_positions(SAMPLES_PER_TOKEN)
        if room <= 0:  # the next token would not fit: roll over now
            self._schedule("position_limit", self._delay_tokens, 0.0)
        elif room <= _soft_margin(inner.max_positions) and self._pending is None:
            wait_tokens = room - 1
            self._schedule("position_limit", self._delay_tokens, wait_tokens * TOKEN_S)

    def _emit(self, steps: list[Step]) -> list[Token]:
        inner, out = self._inner, []
        first_slot = LEFT_PAD_TOKENS + inner.delay_tokens  # output at this position describes slot 0
        end_limit = self._offset + inner.n_real
        for step in steps:
            start = self._offset + (step.position - first_slot) * SAMPLES_PER_TOKEN
            start = min(max(start, self._offset), end_limit)
            end = min(start + SAMPLES_PER_TOKEN, end_limit)
            out.append(Token(step.id, self._decoder.push(step.id), start / SAMPLE_RATE, end / SAMPLE_RATE))
        self.stats.steps += len(steps)
        self.stats.position = inner.next_pos
        self.stats.audio_s = self.audio_s
        return out

    def _collect_timings(self) -> None:
        inner = self._inner
        self.stats.encoder_ms.extend(inner.encoder_ms)
        self.stats.decoder_ms.extend(inner.decoder_ms)
        inner.encoder_ms.clear()
        inner.decoder_ms.clear()


RECENT_SAMPLES = 128 * SAMPLES_PER_TOKEN  # 10 s: more than one encoder call can run ahead of the decoder


def _soft_margin(max_positions: int) -> int:
    """Tokens before the position limit from which a rollover waits for a pause (3.2 min at full size)."""
    return min(2400, max(16, max_positions // 8))
