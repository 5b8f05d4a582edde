"""The ``voxcap`` command line: one parser, one module per subcommand in ``tui/commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` (a callable taking the parsed namespace and returning an exit code). ``voxcap``
with no subcommand (or with only options) runs ``listen``, the live captioning app.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Order here is the order in `voxcap --help`.
COMMANDS = ("listen", "transcribe", "models", "devices", "sessions", "export", "bench")
DEFAULT_COMMAND = "listen"


def build_parser() -> argparse.ArgumentParser:
    from tui import __version__

    parser = argparse.ArgumentParser(
        prog="voxcap",
        description="Live captions in your terminal, on your own machine (Voxtral Mini 4B Realtime).",
    )
    parser.add_argument("--version", action="version", version=f"voxcap {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"tui.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"tui.commands.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def _with_default_command(argv: list[str], commands: set[str]) -> list[str]:
    """`voxcap`, `voxcap --stdin` and `voxcap --model X` mean `voxcap listen ...`."""
    if argv and (argv[0] in commands or argv[0] in ("-h", "--help", "--version")):
        return argv
    return [DEFAULT_COMMAND, *argv]


def main(argv: Sequence[str] | None = None) -> int:
    from asr.errors import AsrError
    from tui.errors import VoxcapError

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices) if parser._subparsers else set()
    args = parser.parse_args(_with_default_command(list(sys.argv[1:] if argv is None else argv), commands))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (AsrError, VoxcapError) as error:
        print(f"voxcap: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
