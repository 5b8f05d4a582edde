"""Benchmark the engine as a live stream, and (optionally) the transformers reference on the same weights.

Audio is fed 80 ms at a time, as a live source delivers it, after the prompt's first chunk. Per
step we take the session's own encoder and decoder timings (CUDA-synchronised), so the numbers
are what the app's gauges show. The reference runs its streaming ``generate`` over the same
number of steps on the same weights (quantized weights are given to it dequantized).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from asr import kernels, prefetch
from asr.audio import SAMPLE_RATE, SAMPLES_PER_TOKEN
from asr.runtime import Model
from asr.stream import StreamingSession, prompt_samples


@dataclass
class BenchResult:
    device: str
    device_name: str
    weights: str  # "random q4_k_m", or the checkpoint name
    dtype: str
    delay_ms: int
    steps: int
    load_s: float
    first_token_ms: float  # compute from the first sample to the first id: prompt prefill and graph capture
    encoder_ms_p50: float  # per 80 ms of audio
    encoder_ms_p99: float
    decoder_ms_p50: float  # per decoder step
    decoder_ms_p99: float
    total_ms_p50: float  # encoder + decoder per 80 ms
    rtf: float  # compute time / audio time
    context: int = 0  # decoder steps streamed before timing started
    chunk_ms: int = 80  # audio per feed
    memory: dict[str, float] = field(default_factory=dict)  # GB
    reference_step_ms: float | None = None  # transformers, per step, same weights and device
    speedup: float | None = None
    # ``profile_steps`` more steps under torch.profiler (not in the figures above): GPU time per
    # kernel on CUDA, self CPU time per operator on CPU, per step, largest first.
    profile_steps: int = 0
    profile_busy_ms: float | None = None  # the sum of the rows (on CUDA: the GPU's busy time per step)
    # CUDA: the GPU idle per step between kernels, in gaps shorter than BUBBLE_US (launch latency
    # inside the graphs); what the timings hold beyond busy + bubbles is host time.
    profile_bubbles_ms: float | None = None
    profile: list[dict] = field(default_factory=list)  # {"name", "us_per_step", "calls_per_step"}

    def as_dict(self) -> dict:
        return asdict(self)


def benchmark(model: Model, seconds: float = 30.0, delay_ms: int = 480, load_s: float = 0.0, weights: str = "",
              context: int = 0, chunk_ms: int = 80, profile_steps: int = 0) -> BenchResult:  # fmt: skip
    """Stream ``seconds`` of noise after ``context`` untimed steps, ``chunk_ms`` of audio per feed,
    then ``profile_steps`` more under the profiler."""
    rng = np.random.default_rng(0)
    first = prompt_samples(delay_ms)
    warm = first + context * SAMPLES_PER_TOKEN
    timed_end = warm + int(seconds * SAMPLE_RATE)
    chunk = chunk_ms * SAMPLE_RATE // 1000
    # Whole chunks only: a short last chunk would ask the encoder for a token count whose graph was
    # never captured, and the capture would land in the profile.
    profiled = -(-profile_steps * SAMPLES_PER_TOKEN // chunk) * chunk
    audio = (rng.standard_normal(timed_end + profiled) * 0.05).astype(np.float32)
    # Warm-up stream: kernel autotuning and lazy library setup happen once per process, not per
    # stream, so they stay out of the figures (each stream still captures its own CUDA graphs).
    model.warm_up(delay_ms, chunk_ms=chunk_ms)
    session = model.stream(delay_ms)
    _reset_peak(model)
    t0 = time.perf_counter()
    session.feed(audio[:first])
    first_token_ms = (time.perf_counter() - t0) * 1000.0
    for start in range(first, warm, chunk):  # fill the decoder's cache to ``context`` positions
        session.feed(audio[start : min(start + chunk, warm)])
    session.stats.encoder_ms.clear()
    session.stats.decoder_ms.clear()
    wall0 = time.perf_counter()
    for start in range(warm, timed_end, chunk):
        session.feed(audio[start : min(start + chunk, timed_end)])
    wall = time.perf_counter() - wall0
    enc = np.asarray(session.stats.encoder_ms)
    dec = np.asarray(session.stats.decoder_ms)
    steps = len(dec)
    result = BenchResult(
        device=str(model.device),
        device_name=_device_name(model.device),
        weights=weights or model.info.name,
        dtype=model.info.dtype,
        delay_ms=delay_ms,
        steps=steps,
        load_s=load_s,
        first_token_ms=first_token_ms,
        encoder_ms_p50=_pct(enc, 50),
        encoder_ms_p99=_pct(enc, 99),
        decoder_ms_p50=_pct(dec, 50),
        decoder_ms_p99=_pct(dec, 99),
        total_ms_p50=_pct(enc, 50) + _pct(dec, 50),
        rtf=wall / max(1e-9, (timed_end - warm) / SAMPLE_RATE),
        context=context,
        chunk_ms=chunk_ms,
        memory=memory_report(model.device),
    )
    if profile_steps:
        chunks = [audio[start : start + chunk] for start in range(timed_end, len(audio), chunk)]
        rows, n_steps, bubbles_us = profile_feeds(session, chunks, model.device)
        result.profile_steps = n_steps
        result.profile = [asdict(row) for row in rows]
        result.profile_busy_ms = sum(row.us_per_step for row in rows) / 1000.0
        if bubbles_us is not None:
            result.profile_bubbles_ms = bubbles_us / max(1, n_steps) / 1000.0
    return result


# Settings ``ab_benchmark`` alternates between, each a name -> context manager that applies it.
AB_KNOBS: dict[str, dict[str, Callable[[], contextlib.AbstractContextManager[None]]]] = {
    "pdl": {"on": contextlib.nullcontext, "off": kernels.pdl_disabled},
    "fused-swiglu": {"on": contextlib.nullcontext, "off": kernels.swiglu_unfused},
    "l2-prefetch": {mode: (lambda mode=mode: prefetch.using(mode)) for mode in ("0", "bulk", "lines")},
    "fused-norm": {"off": lambda: kernels.norm_fused(False), "on": kernels.norm_fused},
}


def ab_benchmark(model: Model, knob: str, repeat: int = 2, **kwargs: object) -> list[tuple[str, BenchResult]]:
    """``benchmark`` under each setting of ``knob`` in turn, ``repeat`` rounds, in one process on
    the same loaded weights: (setting, result) in the order run. Runs on one GPU drift by a few
    per cent and GPUs of one kind differ by about 5 %, so speed-ups that small only show when the
    variants alternate like this (each stream captures its graphs under its own setting)."""
    settings = AB_KNOBS[knob]
    runs = []
    for _ in range(repeat):
        for name, apply in settings.items():
            with apply():
                runs.append((name, benchmark(model, **kwargs)))
    return runs


@dataclass
class OpTime:
    name: str  # a CUDA kernel's name, or a CPU operator's
    us_per_step: float
    calls_per_step: float


BUBBLE_US = 20.0  # GPU idle gaps shorter than this are launch latency, longer ones host time


def profile_feeds(session: StreamingSession, chunks: list[np.ndarray], device: torch.device
                  ) -> tuple[list[OpTime], int, float | None]:  # fmt: skip
    """Feed ``chunks`` under torch.profiler -> (time per kernel or operator per decoder step,
    largest first; decoder steps run; on CUDA the total GPU idle in gaps under ``BUBBLE_US``
    between kernels, in µs). On CUDA the rows are GPU kernels, CUDA-graph replays
    included; on CPU each operator's self time (its children's excluded, so rows add up). Rows
    are by name: a Triton kernel's specialisations share one. A rollover inside the window (an
    EOS) would bring the new stream's prompt and graph capture into it."""
    from torch.profiler import ProfilerActivity, profile

    steps_before = session.stats.steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for chunk in chunks:
            session.feed(chunk)
        _sync(device)
    steps = session.stats.steps - steps_before
    totals: dict[str, list[float]] = {}
    bubbles = None
    if device.type == "cuda":
        intervals = []
        for event in prof.events():
            if event.device_type.name == "CUDA":
                entry = totals.setdefault(event.name, [0.0, 0])
                entry[0] += event.device_time_total
                entry[1] += 1
                intervals.append((event.time_range.start, event.time_range.end))
        bubbles = _short_gaps_us(intervals, BUBBLE_US)
    else:
        for op in prof.key_averages():
            if op.self_cpu_time_total > 0:
                totals[op.key] = [op.self_cpu_time_total, op.count]
    per = max(1, steps)
    rows = [OpTime(name, us / per, calls / per) for name, (us, calls) in totals.items()]
    return sorted(rows, key=lambda row: -row.us_per_step), steps, bubbles


def _short_gaps_us(intervals: list[tuple[float, float]], under_us: float) -> float:
    """Total idle time between the union of ``intervals`` (start, end in µs), counting gaps
    shorter than ``under_us`` only."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is not None and start > reach:
            gap = start - reach
            total += gap if gap < under_us else 0.0
        reach = end if reach is None else max(reach, end)
    return total


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def _reset_peak(model: Model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)


def memory_report(device: torch.device) -> dict[str, float]:
    """GB: PyTorch allocated/reserved (and peaks) on CUDA plus NVML's device view; RSS on CPU."""
    import resource

    import psutil

    gb = 1e9
    process = {
        "process_rss": psutil.Process().memory_info().rss / gb,
        "process_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gb,  # loading included
    }
    if device.type != "cuda":
        return process
    report = {
        "allocated": torch.cuda.memory_allocated(device) / gb,
        "reserved": torch.cuda.memory_reserved(device) / gb,
        "max_allocated": torch.cuda.max_memory_allocated(device) / gb,
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        report["device_used"] = info.used / gb
        report["device_total"] = info.total / gb
    except Exception:  # NVML is optional: without it only the device-wide figures are missing
        pass
    return {**report, **process}


def reference_step_ms(model: Model, steps: int = 60, delay_ms: int = 480) -> float:
    """Per-step time of transformers' streaming generate on the same weights and device."""
    from asr.reference_bridge import reference_model

    hf = reference_model(model)
    delay = delay_ms // 80
    n_prompt = 33 + delay
    rng = np.random.default_rng(0)
    frames_first = 8 * n_prompt
    feats = [torch.randn(1, 128, frames_first, generator=torch.Generator().manual_seed(0))]
    feats += [torch.from_numpy(rng.standard_normal((1, 128, 8)).astype(np.float32)) for _ in range(steps)]
    feats = [f.to(model.device, model.dtype) for f in feats]
    prompt = torch.tensor([[1] + [32] * (n_prompt - 1)], device=model.device)

    def run(n: int) -> float:
        _sync(model.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            hf.generate(input_ids=prompt, input_features=(f for f in feats[: n + 1]), num_delay_tokens=delay,
                        do_sample=False, max_new_tokens=n + 2)  # fmt: skip
        _sync(model.device)
        return time.perf_counter() - t0

    run(4)  # warm up
    short, long = run(4), run(steps)
    return (long - short) / (steps - 4) * 1000.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
