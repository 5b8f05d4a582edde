"""`voxcap export SESSION --format txt|srt|vtt|json|md [-o FILE]`: a journal as a transcript file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tui.commands.sessions import format_duration, resolve_session
from tui.export import FORMATS, export_to_file, render
from tui.journal import read_journal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a session as TXT, SRT, VTT, JSON or Markdown",
        description="Export a session journal. SESSION is a journal path, a session id (or its start) "
                    "from `voxcap sessions`, or `last`. Works on running and interrupted sessions too.")
    parser.add_argument("session", metavar="SESSION", help="journal path, session id, or `last`")
    parser.add_argument("-f", "--format", choices=FORMATS, default=None,
                        help="output format (default: from the -o suffix, else txt)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="where to write (`-` for stdout; default: <session id>.<format> here)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = resolve_session(args.session)
    contents = read_journal(path)
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output and args.output != "-" else ""
        fmt = suffix if suffix in FORMATS else "txt"
    if args.output == "-":
        sys.stdout.write(render(fmt, contents))
        return 0
    output = Path(args.output) if args.output else Path(f"{contents.header.session_id or path.stem}.{fmt}")
    export_to_file(fmt, contents, output)
    if not contents.ended_cleanly:
        until = format_duration(contents.duration_s)
        print(f"note: session {contents.header.session_id} did not end cleanly; exported its "
              f"{len(contents.segments)} segments up to {until}", file=sys.stderr)
    print(output)
    return 0
