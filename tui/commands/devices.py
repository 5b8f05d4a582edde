"""`voxcap devices`: the audio inputs voxcap can capture from.

Two lists: PortAudio input devices (microphones; pick with ``--device NAME|INDEX``) and the
PulseAudio/PipeWire monitor sources (system audio; ``--source system --device NAME``), which
PortAudio does not show. Either list may be unavailable (no PortAudio, no sound server); the
command then says why and what to install, and still prints the other.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from tui.errors import AudioSourceError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list microphones and system-audio (monitor) sources",
        description=(
            "List audio inputs: PortAudio microphones (index, name, channels, native rate; * = default) "
            "and PulseAudio/PipeWire monitor sources for system audio (* = monitor of the default output)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--all-sources", action="store_true", help="list every sound-server source, not only monitors"
    )
    parser.set_defaults(func=run)


def gather(all_sources: bool = False) -> dict[str, Any]:
    """Both lists, each with the error that kept it empty (None when it worked)."""
    from tui.sources import default_sink, list_input_devices, list_pulse_sources

    report: dict[str, Any] = {"inputs": [], "inputs_error": None, "monitors": [], "monitors_error": None}
    try:
        report["inputs"] = [asdict(device) for device in list_input_devices()]
    except AudioSourceError as error:
        report["inputs_error"] = str(error)
    try:
        sources = list_pulse_sources()
        sink = default_sink()
    except AudioSourceError as error:
        report["monitors_error"] = str(error)
    else:
        report["monitors"] = [
            {**asdict(source), "is_default": source.monitor_of is not None and source.monitor_of == sink}
            for source in sources
            if all_sources or source.is_monitor
        ]
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = ["Microphones (PortAudio)  --source mic --device NAME|INDEX"]
    if report["inputs_error"]:
        lines.append(f"  unavailable: {report['inputs_error']}")
    elif not report["inputs"]:
        lines.append("  none found (no sound card visible to PortAudio, and no PulseAudio/PipeWire server)")
    for device in report["inputs"]:
        mark = "*" if device["is_default"] else " "
        lines.append(
            f" {mark}{device['index']:>3}  {device['name']}  ({device['hostapi']}, "
            f"{device['channels']} ch, {device['default_rate']:.0f} Hz)"
        )
    lines.append("")
    lines.append("System audio (PulseAudio/PipeWire monitors)  --source system --device NAME")
    if report["monitors_error"]:
        lines.append(f"  unavailable: {report['monitors_error']}")
    elif not report["monitors"]:
        lines.append("  none found")
    for source in report["monitors"]:
        mark = "*" if source["is_default"] else " "
        description = f"  {source['description']}" if source["description"] else ""
        lines.append(
            f" {mark}#{source['index']:<3} {source['name']}{description}  "
            f"({source['channels']} ch, {source['rate']} Hz)"
        )
    lines.append("")
    lines.append("* = default. Mic and system audio together: --source mix.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = gather(all_sources=args.all_sources)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
