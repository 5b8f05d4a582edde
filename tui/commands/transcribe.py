"""``voxcap transcribe AUDIO``: run a file through the same streaming session the live app uses.

There is no separate offline path: the file is read in blocks and fed to ``session.feed`` as a
live stream would be, then ``finish()`` flushes the delayed text. ``--format jsonl`` prints one
object per emitted token and one per finished segment (split at sentence ends and pauses), each
with its time in the audio.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tui.errors import AudioSourceError

BLOCK_SECONDS = 2.0  # read size; any size gives the same tokens
SENTENCE_END = (".", "!", "?", "。", "！", "？")
PAUSE_TOKENS = 8  # consecutive STREAMING_PAD ids (640 ms) that close a segment


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        help="transcribe an audio file through the streaming engine",
        description="Transcribe an audio file (WAV, FLAC, OGG, ...) with the streaming engine.",
    )
    parser.add_argument("audio", type=Path, help="audio file (any sample rate; channels are averaged)")
    parser.add_argument("--model", help="model directory, .gguf file, or a known model name (voxcap models)")
    parser.add_argument("--delay-ms", type=int, default=480, help="transcription delay, 80..2400 step 80")
    parser.add_argument("--format", choices=("text", "jsonl"), default="text")
    parser.add_argument(
        "--compute-device", "--device", dest="device", help="cpu, cuda or cuda:N (default: CUDA if present)"
    )
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16)")
    parser.add_argument("--dequantize", action="store_true", help="expand quantized weights to --dtype at load")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asr
    from asr.hub import DEFAULT_MODEL, resolve_model
    from asr.stream import delay_tokens_for

    delay_tokens_for(args.delay_ms)  # a bad delay fails before the model loads
    blocks, rate = _open_audio(args.audio)
    model = asr.load_model(
        resolve_model(args.model or DEFAULT_MODEL), device=args.device, dtype=args.dtype, dequantize=args.dequantize
    )
    session = model.stream(args.delay_ms)
    writer = _JsonlWriter() if args.format == "jsonl" else _TextWriter()
    for block in blocks:
        writer.add(session.feed(block, sample_rate=rate))
    writer.add(session.finish())
    writer.close()
    return 0


def _open_audio(path: Path) -> tuple[object, int]:
    import soundfile as sf

    if not path.is_file():
        raise AudioSourceError(f"{path}: no such file; give the path of an audio file (WAV, FLAC, OGG)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioSourceError(f"{path}: not a readable audio file ({error}); convert it with ffmpeg") from error
    if info.channels < 1 or info.samplerate <= 0:
        raise AudioSourceError(f"{path}: has no audio channels; is it an audio file?")

    def blocks() -> object:
        frames = int(BLOCK_SECONDS * info.samplerate)
        for block in sf.blocks(str(path), blocksize=frames, dtype="float32", always_2d=True):
            yield block.mean(axis=1)

    return blocks(), int(info.samplerate)


class _TextWriter:
    """Prints the transcript as it grows, one line per segment, stripped of the leading space."""

    def __init__(self) -> None:
        self.line = ""

    def add(self, tokens: list) -> None:
        for token in tokens:
            self.line += token.text
            if self.line.rstrip().endswith(SENTENCE_END):
                self._flush()

    def _flush(self) -> None:
        if self.line.strip():
            print(self.line.strip(), flush=True)
        self.line = ""

    def close(self) -> None:
        self._flush()


class _JsonlWriter:
    """One object per token (``type: token``) and per finished segment (``type: segment``)."""

    def __init__(self) -> None:
        self.text, self.start, self.end, self.pads = "", None, 0.0, 0

    def add(self, tokens: list) -> None:
        for token in tokens:
            record = {"type": "token", "id": token.id, "text": token.text,
                      "start_s": round(token.start_s, 3), "end_s": round(token.end_s, 3)}  # fmt: skip
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.pads = self.pads + 1 if token.id == 32 else 0
            if token.text:
                if self.start is None and token.text.strip():
                    self.start = token.start_s
                self.text += token.text
                self.end = token.end_s
            if self.text.rstrip().endswith(SENTENCE_END) or (self.pads >= PAUSE_TOKENS and self.text.strip()):
                self._segment()
        sys.stdout.flush()

    def _segment(self) -> None:
        if self.text.strip():
            record = {"type": "segment", "text": self.text.strip(),
                      "start_s": round(self.start or 0.0, 3), "end_s": round(self.end, 3)}  # fmt: skip
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.text, self.start = "", None

    def close(self) -> None:
        self._segment()
        sys.stdout.flush()
