"""``voxcap bench``: engine speed as a live stream, on a real model or full-size random weights."""

from __future__ import annotations

import argparse
import json
import sys
import time

# Storage types of --random weights (asr.weights.random; listed here so the CLI starts without torch).
RANDOM_QUANTS = ("f32", "bf16", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
PROFILE_ROWS = 25  # rows of --profile printed (--json has them all)
# asr.bench.AB_KNOBS, named here so the CLI starts without torch
AB_KNOBS = ("pdl", "fused-swiglu", "l2-prefetch", "fused-norm")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure engine speed and memory (real or random full-size weights)",
        description="Feed audio as a live stream (80 ms at a time) and report per-step compute, "
        "first-token latency, real-time factor and memory.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="model path or catalog name")
    source.add_argument("--random", action="store_true", help="full-size random weights (no file needed)")
    parser.add_argument("--quant", default="bf16", choices=RANDOM_QUANTS,
                        help="storage type of --random weights (default bf16)")  # fmt: skip
    parser.add_argument(
        "--compute-device", "--device", dest="device", help="cpu, cuda or cuda:N (default: CUDA if present)"
    )
    parser.add_argument("--dtype", default=None, help="compute dtype (default bfloat16)")
    parser.add_argument("--dequantize", action="store_true", help="expand quantized weights to --dtype at load")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio to stream and time (default 30)")
    parser.add_argument("--context", type=int, default=0, metavar="N",
                        help="stream N steps (N x 80 ms) untimed first, so timing starts with N positions "
                             "in the decoder's cache (8192 = the full window)")  # fmt: skip
    parser.add_argument("--chunk-ms", type=int, default=80,
                        help="audio per feed (default 80 ms, one step; larger chunks batch the encoder)")  # fmt: skip
    parser.add_argument("--reference-path", action="store_true",
                        help="run voxcap's plain PyTorch reference path (no fused kernels or repacking)")  # fmt: skip
    parser.add_argument("--delay-ms", type=int, default=480)
    parser.add_argument("--compare-reference", action="store_true",
                        help="also time transformers' implementation on the same weights and device")  # fmt: skip
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then run STEPS more steps under torch.profiler and list the time per GPU kernel "
                             "(CPU: per operator), per step")  # fmt: skip
    parser.add_argument("--ab", choices=AB_KNOBS, metavar="KNOB",
                        help="A/B in one process: alternate the settings of KNOB (pdl: dependent launch on/off; "
                             "fused-swiglu: on/off; l2-prefetch: 0/bulk/lines; fused-norm: off/on) for --repeat rounds "
                             "and compare "
                             "their totals")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, metavar="N", help="rounds of --ab (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asr
    from asr.bench import benchmark, reference_step_ms
    from asr.loader import load_random_model

    if args.chunk_ms <= 0 or args.chunk_ms % 10:
        print("voxcap bench: --chunk-ms must be a positive multiple of 10", file=sys.stderr)
        return 2
    if args.context < 0:
        print("voxcap bench: --context must be 0 or more steps", file=sys.stderr)
        return 2
    if args.profile < 0:
        print("voxcap bench: --profile must be 0 or more steps", file=sys.stderr)
        return 2
    if args.ab and args.compare_reference:
        print("voxcap bench: --ab and --compare-reference are separate runs: pick one", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("voxcap bench: --repeat must be 1 or more rounds", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.random or not args.model:
        model = load_random_model(args.quant, args.device, args.dtype, fast=not args.reference_path)
        weights = f"random {args.quant}"
    else:
        from asr.hub import resolve_model

        model = asr.load_model(resolve_model(args.model), args.device, args.dtype, dequantize=args.dequantize,
                               fast=not args.reference_path)  # fmt: skip
        weights = model.info.name
    load_s = time.perf_counter() - t0
    if args.ab:
        from asr.bench import ab_benchmark

        runs = ab_benchmark(model, args.ab, args.repeat, seconds=args.seconds, delay_ms=args.delay_ms, load_s=load_s,
                            weights=weights, context=args.context, chunk_ms=args.chunk_ms,
                            profile_steps=args.profile)  # fmt: skip
        if args.json:
            print(json.dumps({"knob": args.ab, "runs": [{"setting": s, **r.as_dict()} for s, r in runs]}))
        else:
            _print_ab(args.ab, runs)
        return 0
    result = benchmark(model, args.seconds, args.delay_ms, load_s, weights, context=args.context,
                       chunk_ms=args.chunk_ms, profile_steps=args.profile)  # fmt: skip
    if args.compare_reference:
        result.reference_step_ms = reference_step_ms(model, delay_ms=args.delay_ms)
        result.speedup = result.reference_step_ms / result.total_ms_p50
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        _print(result)
    return 0


def _print_ab(knob: str, runs: list) -> None:
    first = runs[0][1]
    print(f"voxcap bench --ab {knob}: {first.weights} on {first.device_name} ({first.device}), {first.dtype}, "
          f"delay {first.delay_ms} ms, context {first.context}, {first.chunk_ms} ms chunks")
    print("  setting     encoder p50  decoder p50    total p50")
    totals: dict[str, list[float]] = {}
    for setting, r in runs:
        totals.setdefault(setting, []).append(r.total_ms_p50)
        print(f"  {setting:8s} {r.encoder_ms_p50:11.3f} ms {r.decoder_ms_p50:9.3f} ms {r.total_ms_p50:9.3f} ms")
    base_setting, base = next(iter(totals.items()))
    base_median = sorted(base)[len(base) // 2]
    for setting, values in totals.items():
        median = sorted(values)[len(values) // 2]
        print(f"  {setting:8s} median total {median:.3f} ms over {len(values)} runs, "
              f"{median / base_median:.3f}x of {base_setting}")


def _print(r: object) -> None:
    print(f"voxcap bench: {r.weights} on {r.device_name} ({r.device}), {r.dtype}, delay {r.delay_ms} ms")
    print(f"  load                {r.load_s:8.2f} s")
    print(f"  first token         {r.first_token_ms:8.2f} ms  (prompt prefill + encoder + graph capture)")
    print(f"  encoder / 80 ms     {r.encoder_ms_p50:8.3f} ms p50  {r.encoder_ms_p99:8.3f} ms p99")
    print(f"  decoder / step      {r.decoder_ms_p50:8.3f} ms p50  {r.decoder_ms_p99:8.3f} ms p99")
    print(f"  total / 80 ms       {r.total_ms_p50:8.3f} ms p50  (budget 80 ms)   RTF {r.rtf:.3f}  ({r.steps} steps, "
          f"context {r.context} -> {r.context + r.steps} positions, {r.chunk_ms} ms chunks)")
    print("  memory              " + ", ".join(f"{k} {v:.2f} GB" for k, v in r.memory.items()))
    if r.reference_step_ms is not None:
        print(f"  transformers        {r.reference_step_ms:8.3f} ms per step (encoder + decoder)  -> voxcap is "
              f"{r.speedup:.1f}x faster")
    if r.profile:
        on_gpu = r.device.startswith("cuda")
        what = "GPU kernels" if on_gpu else "CPU operators (self time)"
        if r.profile_bubbles_ms is not None:
            from asr.bench import BUBBLE_US

            print(f"  GPU idle            {r.profile_bubbles_ms:8.3f} ms per step between kernels (gaps under "
                  f"{BUBBLE_US:.0f} us: launch latency), over {r.profile_steps} profiled steps")
        print(f"  profile             {r.profile_busy_ms:8.3f} ms per step in {what}, over {r.profile_steps} steps"
              + (" (a kernel's time includes its wait under dependent launch):" if on_gpu else ":"))
        for row in r.profile[:PROFILE_ROWS]:
            print(f"    {row['us_per_step']:9.1f} us {row['calls_per_step']:6.1f} calls  {row['name'][:90]}")
