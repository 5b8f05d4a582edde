"""voxcap's application layer: the Textual app, audio sources, the ASR worker, CLI, sessions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voxcap")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
