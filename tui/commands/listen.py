"""`voxcap listen` (the default command): live captions in the TUI, or headless for pipes.

Headless (finalized lines, or JSONL events with ``--format jsonl``) when ``--headless`` is given
or stdout is not a terminal. Flags override the config file; see ``config.example.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tui.errors import SettingsError
from tui.settings import DTYPES, LANGUAGES, OUTPUT_FORMATS, SOURCES, Settings, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "listen",
        help="live captions (the default command)",
        description="Caption live speech: microphone, system audio, a file or stdin.",
    )
    parser.add_argument("file", nargs="?", help="caption this audio file (WAV, FLAC, OGG) instead of a live input")
    parser.add_argument("--file", dest="file_option", metavar="PATH", help="same as the FILE argument")
    parser.add_argument("--model", "-m", help="model directory/file or catalog name (default: the default model)")
    parser.add_argument("--compute-device", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", choices=DTYPES, help="compute dtype (default: auto)")
    parser.add_argument(
        "--delay",
        dest="delay_ms",
        type=int,
        metavar="MS",
        help="transcription delay, 80..2400 in steps of 80 (default 480)",
    )
    parser.add_argument(
        "--language",
        "-l",
        choices=["auto", *LANGUAGES],
        help="expected language (flags mismatches; the model detects it itself)",
    )
    parser.add_argument("--theme", help="dark, light, high-contrast or a user theme")
    parser.add_argument("--source", choices=SOURCES, help="input: mic, system, mix, file, stdin")
    parser.add_argument(
        "--device",
        "-d",
        dest="input_device",
        metavar="NAME|INDEX",
        help="input device (see `voxcap devices`)",
    )
    parser.add_argument("--stdin", action="store_true", help="read audio from stdin (raw s16le or WAV)")
    parser.add_argument("--stdin-rate", type=int, help="sample rate of raw s16le stdin (default 16000)")
    parser.add_argument("--stdin-channels", type=int, help="channels of raw s16le stdin (default 1)")
    parser.add_argument("--fast", action="store_true", help="read a file as fast as possible, not in real time")
    parser.add_argument("--headless", action="store_true", help="no TUI: print finalized lines to stdout")
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=OUTPUT_FORMATS,
        help="headless output: text (finalized lines) or jsonl (events)",
    )
    parser.add_argument("--no-journal", action="store_true", help="do not write a session journal")
    parser.add_argument("--record", action="store_true", help="record the session's audio beside the journal")
    parser.add_argument("--live-file", metavar="PATH", help="keep the last lines in this file (OBS text source)")
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    from themes import load_themes
    from tui.settings import config_dir

    overrides: dict[str, Any] = {
        key: getattr(args, key, None)
        for key in (
            "model",
            "compute_device",
            "dtype",
            "delay_ms",
            "language",
            "theme",
            "source",
            "input_device",
            "stdin_rate",
            "stdin_channels",
            "output_format",
            "live_file",
        )
    }
    file = args.file or getattr(args, "file_option", None)
    if file:
        overrides["file"] = file
        overrides["source"] = overrides["source"] or "file"
    if args.stdin:
        overrides["source"] = "stdin"
    if args.fast:
        overrides["realtime"] = False
    if args.no_journal:
        overrides["journal"] = False
    if args.record:
        overrides["record_audio"] = True
    return load_settings(overrides, theme_names=load_themes(config_dir()))


def load_engine(settings: Settings) -> Any:
    """Resolve and load the model (slow: run it off the UI thread)."""
    import torch

    import asr
    from asr.hub import DEFAULT_MODEL, resolve_model

    path = resolve_model(settings.model or DEFAULT_MODEL)
    device = None if settings.compute_device == "auto" else settings.compute_device
    dtype: str | None = None if settings.dtype == "auto" else settings.dtype
    on_cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if dtype is None and not on_cuda:
        dtype = "float32"  # bfloat16 matmuls are slow on most CPUs
    return asr.load_model(path, device=device, dtype=dtype)


def make_source(settings: Settings, kind: str, device: str | None, stdin_fd: int | None = None) -> Any:
    from tui.sources import StdinSource, open_source

    if kind == "stdin" and stdin_fd is not None:
        return StdinSource(stdin_fd, rate=settings.stdin_rate, channels=settings.stdin_channels)

    return open_source(
        kind,
        device=None if kind == "file" else device,
        path=settings.file if kind == "file" else None,
        realtime=settings.realtime,
        stdin_rate=settings.stdin_rate,
        stdin_channels=settings.stdin_channels,
    )


def _print_journal_path(path: Path | None) -> None:
    if path is not None:
        print(f"voxcap: transcript saved to {path}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.headless or not sys.stdout.isatty():
        return run_headless(settings)
    return run_tui(settings)


def run_headless(settings: Settings) -> int:
    from tui.headless import run_headless_async
    from tui.runtime import default_journal

    model = load_engine(settings)
    source = make_source(settings, settings.source, settings.input_device)

    def warn(message: str | None) -> None:
        if message:
            print(f"voxcap: warning: {message}", file=sys.stderr)

    def open_journal() -> Any:
        return default_journal(settings, model.info, warn)

    return asyncio.run(
        run_headless_async(settings, model, source, open_journal=open_journal if settings.journal else None)
    )


def _keyboard_from_tty() -> int | None:
    """`ffmpeg ... | voxcap --stdin` on a terminal: the audio pipe moves to a new fd and fd 0
    becomes the terminal, so Textual reads keys from the keyboard, not from the audio."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    audio_fd = os.dup(0)
    try:
        keyboard = os.open("/dev/tty", os.O_RDONLY)
    except OSError as error:
        os.close(audio_fd)
        raise SettingsError(f"cannot open the terminal for keys ({error.strerror}); add --headless") from error
    os.dup2(keyboard, 0)
    os.close(keyboard)
    return audio_fd


def run_tui(settings: Settings) -> int:
    from asr.hub import DEFAULT_MODEL, download
    from tui.app import VoxcapApp
    from tui.runtime import CaptionRuntime, default_journal

    stdin_fd = _keyboard_from_tty() if settings.source == "stdin" else None
    runtime = CaptionRuntime(
        settings=settings,
        source_factory=lambda kind, device: make_source(settings, kind, device, stdin_fd),
        model_loader=lambda: load_engine(settings),
        downloader=(lambda: download(DEFAULT_MODEL, progress=False)) if settings.model is None else None,
        journal_factory=default_journal if settings.journal else None,
    )
    code = VoxcapApp(settings, runtime).run()
    _print_journal_path(runtime.journal_path)
    return int(code or 0)
