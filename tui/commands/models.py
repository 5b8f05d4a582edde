"""``voxcap models``: list the known checkpoints and which are here; ``models download NAME``.

voxcap models [--models-dir DIR]                 list (same as `voxcap models list`)
voxcap models download NAME [--models-dir DIR]   fetch one (into DIR/NAME when given,
                                                 else the Hugging Face cache), resumable
voxcap models path NAME [--models-dir DIR]       print the local path `--model NAME` loads
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from asr import hub


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list known models and download one",
        description="List the published Voxtral Realtime checkpoints voxcap knows, mark those present "
        "locally, and download one through the Hugging Face hub (resumable).",
    )
    _add_models_dir(parser, default=None)
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    listing = actions.add_parser("list", help="list known models (the default)")
    _add_models_dir(listing, default=argparse.SUPPRESS)
    fetch = actions.add_parser("download", help="download a model by name")
    fetch.add_argument("name", help=f"a model name from `voxcap models` (default model: {hub.DEFAULT_MODEL})")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_models_dir(fetch, default=argparse.SUPPRESS)
    where = actions.add_parser("path", help="print the local path of a model name (never downloads)")
    where.add_argument("name")
    _add_models_dir(where, default=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def _add_models_dir(parser: argparse.ArgumentParser, default: object) -> None:
    # On the sub-actions the default is SUPPRESS, so `voxcap models --models-dir X download N`
    # and `voxcap models download N --models-dir X` both work.
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help="a folder of manually placed models (DIR/NAME/<files>); downloads go to DIR/NAME",
    )


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "models_action", None) or "list"
    models_dir: Path | None = getattr(args, "models_dir", None)
    if action == "download":
        return _download(args.name, models_dir, quiet=args.quiet)
    if action == "path":
        print(hub.resolve_model(args.name, models_dir))
        return 0
    print_listing(hub.list_models(models_dir), models_dir)
    return 0


def _download(name: str, models_dir: Path | None, *, quiet: bool) -> int:
    entry = hub.get_entry(name)
    status = hub.locate(entry, models_dir)
    if status.path is not None:
        print(f"{entry.name} is already here: {status.path}")
        return 0
    local_dir = models_dir / entry.name if models_dir is not None else None
    destination = local_dir if local_dir is not None else hub.hf_cache_dir()
    print(f"Downloading {entry.name} ({entry.summary}) from {entry.url} into {destination}", file=sys.stderr)
    try:
        path = hub.download(entry.name, progress=not quiet, local_dir=local_dir)
    except KeyboardInterrupt:
        print(
            f"\nInterrupted; `voxcap models download {entry.name}` resumes where it stopped.", file=sys.stderr
        )
        return 130
    print(f"{entry.name} ready: {path}")
    hint = f"--model {entry.name}" + (f" --models-dir {models_dir}" if models_dir is not None else "")
    print(f"Use it with: voxcap {hint}", file=sys.stderr)
    return 0


def print_listing(
    statuses: list[hub.ModelStatus], models_dir: Path | None, out: TextIO | None = None
) -> None:
    out = out if out is not None else sys.stdout
    rows = [("NAME", "FORMAT", "QUANT", "SIZE", "SOURCE", "LOCAL")]
    for status in statuses:
        entry = status.entry
        name = entry.name + (" (default)" if entry.name == hub.DEFAULT_MODEL else "")
        local = f"yes  {status.path}" if status.path is not None else "-"
        rows.append((name, entry.format, entry.quant, f"{entry.size_gb:.2f} GB", entry.repo_id, local))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
        print("  ".join([*cells, row[5]]).rstrip(), file=out)
    present = sum(status.present for status in statuses)
    print(file=out)
    print(f"{present} of {len(statuses)} present. Download: voxcap models download NAME", file=out)
    default = hub.get_entry(hub.DEFAULT_MODEL)
    print(f"Default {default.name}: {default.note}, per transcribe.cpp.", file=out)
    print(f"Hugging Face cache: {hub.hf_cache_dir()} (set HF_HUB_CACHE to move it)", file=out)
    if models_dir is not None:
        print(f"Models folder: {models_dir} (DIR/NAME/<files>)", file=out)
        others = _other_local_models(models_dir, statuses)
        if others:
            print("Other models in that folder (use --model PATH):", file=out)
            for path in others:
                print(f"  {path}", file=out)


def _other_local_models(models_dir: Path, statuses: list[hub.ModelStatus]) -> list[Path]:
    """GGUF files and weight folders in ``models_dir`` that no catalog entry accounts for."""
    if not models_dir.is_dir():
        return []
    known = {status.path.resolve() for status in statuses if status.path is not None}
    known |= {path.parent for path in known}
    found: list[Path] = []
    for candidate in sorted(models_dir.iterdir()):
        if candidate.resolve() in known:
            continue
        if candidate.is_file() and candidate.suffix == ".gguf":
            found.append(candidate)
        elif candidate.is_dir():
            ggufs = sorted(candidate.glob("*.gguf"))
            if ggufs:
                found.extend(path for path in ggufs if path.resolve() not in known)
            elif (candidate / "consolidated.safetensors").is_file() or (candidate / "config.json").is_file():
                found.append(candidate)
    return found
