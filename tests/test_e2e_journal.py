"""End to end: the real `voxcap listen --headless` process, killed and stopped, and its journal.

Each run is a fresh ``python -m tui.cli listen`` on the tiny random model, reading a synthetic
WAV at real-time pace, printing JSONL events; its data and config directories are private
temporary ones. The config closes segments early (short pause, 1 s maximum) so the tiny model
finalizes a line every second or two. Runs go in parallel (each spends most of its time waiting
for the audio clock); the 26 processes (20 SIGKILL trials, 3 signals mid-stream, 3 at the start)
cost about 90 s of CPU, mostly model loads: 1.5-2.5 min of wall time on 2 busy cores.

What "reported as finalized" means: a complete ``{"type": "final"}`` line the process wrote to
stdout. The pipe holds everything the process wrote before it died, so after the kill we drain
it; only a last line without its newline (a write torn by the kill) does not count.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import soundfile as sf

from tests.tiny_model import synthetic_speechlike
from tui.commands.sessions import list_sessions
from tui.journal import JournalContents, read_journal

pytestmark = pytest.mark.slow  # 1.5-2.5 min of wall time in all, on 2 cores

SAMPLE_RATE = 16000
INPUT_SECONDS = 40.0  # longer than any run lasts: every stop comes from the test, mid-stream
KILL_TRIALS = 20
KILL_SEED = 20261125  # the kill moments; printed in failures so a trial can be replayed
MAX_KILL_DELAY_S = 10.0  # after the first stdout line, the kill comes within this
PARALLEL_RUNS = 8
START_TIMEOUT_S = 120.0  # model load under a loaded 2-core machine, generous
EXIT_TIMEOUT_S = 60.0
TOKEN_S = 0.08  # one token slot: the exporters' timing tolerance (issue 5)
CONFIG_YAML = "pause_s: 0.24\nmax_segment_s: 1.0\n"  # many short finalized segments


@dataclass
class Run:
    """One voxcap process: its output lines as they came, and where it keeps its data."""

    label: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    lines: list[bytes] = field(default_factory=list)
    stderr: bytes = b""
    first_line: threading.Event = field(default_factory=threading.Event)
    first_final: threading.Event = field(default_factory=threading.Event)
    stopped_while_running: bool = False  # the test's signal reached a process still streaming
    kill_at_final: int | None = None  # SIGKILL from the reader the instant it reads this many finals

    def reported_finals(self) -> list[dict]:
        """Final events on complete stdout lines (a line torn by SIGKILL was never reported)."""
        events = [json.loads(line) for line in self.lines if line.endswith(b"\n")]
        return [event for event in events if event["type"] == "final"]

    def journal_paths(self) -> list[Path]:
        return sorted((self.data_dir / "sessions").glob("*.jsonl"))

    def describe(self) -> str:
        tail = self.stderr.decode(errors="replace")[-1500:]
        return f"[{self.label}] exit {self.process.returncode}; stderr tail:\n{tail}"


def _pump(run: Run) -> None:
    """Reader thread: collect stdout lines until EOF (the process and every writer are gone)."""
    assert run.process.stdout is not None
    finals = 0
    for line in run.process.stdout:
        run.lines.append(line)
        run.first_line.set()
        if b'"type": "final"' in line:
            run.first_final.set()
            finals += 1
            if finals == run.kill_at_final:  # the process is between this print and the next
                run.stopped_while_running = run.process.poll() is None
                run.process.kill()
    run.first_line.set()
    run.first_final.set()  # EOF: unblock waiters; they check whether the process is still running


def _start(
    label: str, base: Path, model_dir: Path, wav: Path, kill_at_final: int | None = None
) -> tuple[Run, threading.Thread, threading.Thread]:
    data_dir, config_dir = base / "data", base / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "config.yaml").write_text(CONFIG_YAML)
    env = {
        **os.environ,
        "VOXCAP_DATA_DIR": str(data_dir),
        "VOXCAP_CONFIG_DIR": str(config_dir),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # a tiny model runs fastest on one thread; runs share 2 cores
    }
    command = [
        sys.executable, "-m", "tui.cli", "listen", str(wav), "--headless", "--format", "jsonl",
        "--model", str(model_dir), "--compute-device", "cpu", "--dtype", "float32",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    run = Run(label, data_dir, process, kill_at_final=kill_at_final)
    reader = threading.Thread(target=_pump, args=(run,), daemon=True)
    reader.start()
    assert process.stderr is not None
    stderr = process.stderr

    def collect_stderr() -> None:
        run.stderr = stderr.read()

    err_reader = threading.Thread(target=collect_stderr, daemon=True)
    err_reader.start()
    return run, reader, err_reader


def _finish(run: Run, reader: threading.Thread, err_reader: threading.Thread) -> None:
    try:
        run.process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.process.kill()  # the test fails on the exit status below; don't leave it running
        run.process.wait()
    reader.join(timeout=10)
    err_reader.join(timeout=10)


@dataclass(frozen=True)
class KillPlan:
    """When a trial kills: ``delay_s`` after the first stdout line, or the instant the reader sees
    final line number ``at_final`` (right after a report: catches a print that came before its fsync)."""

    delay_s: float
    at_final: int | None = None

    def describe(self, trial: int) -> str:
        if self.at_final is not None:
            return f"SIGKILL trial {trial} (seed {KILL_SEED}): on reading final line {self.at_final}"
        return f"SIGKILL trial {trial} (seed {KILL_SEED}): {self.delay_s:.2f} s after the first output line"


def kill_plans() -> list[KillPlan]:
    rng = random.Random(KILL_SEED)
    plans = []
    for trial in range(KILL_TRIALS):
        delay_s = rng.uniform(0.0, MAX_KILL_DELAY_S)
        plans.append(KillPlan(delay_s, rng.randint(1, 4) if trial % 4 == 3 else None))
    return plans


def _kill_trial(trial: int, plan: KillPlan, base: Path, model_dir: Path, wav: Path) -> Run:
    run, reader, err_reader = _start(plan.describe(trial), base, model_dir, wav, plan.at_final)
    if plan.at_final is not None:
        try:  # the reader kills it
            run.process.wait(START_TIMEOUT_S + MAX_KILL_DELAY_S)
        except subprocess.TimeoutExpired:
            run.stopped_while_running = False
    elif run.first_line.wait(START_TIMEOUT_S):
        time.sleep(plan.delay_s)
        run.stopped_while_running = run.process.poll() is None
    run.process.kill()  # SIGKILL (a no-op when the reader already did it)
    _finish(run, reader, err_reader)
    return run


def _signal_run(signum: signal.Signals, base: Path, model_dir: Path, wav: Path) -> Run:
    run, reader, err_reader = _start(signum.name, base, model_dir, wav)
    if run.first_final.wait(START_TIMEOUT_S):  # stop with at least one line finalized
        time.sleep(0.5)
        run.stopped_while_running = run.process.poll() is None
        run.process.send_signal(signum)
    _finish(run, reader, err_reader)
    return run


def _early_signal_run(signum: signal.Signals, base: Path, model_dir: Path, wav: Path) -> Run:
    """Signal the moment the journal has its header: the session exists, nothing is captioned yet."""
    run, reader, err_reader = _start(f"{signum.name} at the start", base, model_dir, wav)
    sessions = run.data_dir / "sessions"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and run.process.poll() is None:
        if sessions.is_dir() and any(path.stat().st_size for path in sessions.glob("*.jsonl")):
            run.stopped_while_running = True
            run.process.send_signal(signum)
            break
        time.sleep(0.002)
    _finish(run, reader, err_reader)
    return run


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e2e-input") / "speech.wav"
    sf.write(path, synthetic_speechlike(INPUT_SECONDS, seed=5), SAMPLE_RATE, subtype="PCM_16")
    return path


@dataclass
class AllRuns:
    kills: list[Run]  # KILL_TRIALS processes, each SIGKILLed at a random moment after it began printing
    signals: dict[str, Run]  # signal name -> a process stopped by it after its first final line
    early_signals: dict[str, Run]  # signal name -> a process stopped by it as soon as its journal began


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, speech_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> AllRuns:
    """All processes of this module in one pool: they spend most of their time waiting for the
    audio clock, so running several at once costs little more than their model loads."""
    base = tmp_path_factory.mktemp("e2e")
    signums = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)  # SIGINT is what Ctrl+C sends
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        signal_futures = {s.name: pool.submit(_signal_run, s, base / s.name, tiny_model_dir, speech_wav)
                          for s in signums}  # fmt: skip
        early_futures = {s.name: pool.submit(_early_signal_run, s, base / f"early-{s.name}", tiny_model_dir,
                                             speech_wav) for s in signums}  # fmt: skip
        kill_futures = [
            pool.submit(_kill_trial, trial, plan, base / f"kill{trial}", tiny_model_dir, speech_wav)
            for trial, plan in enumerate(kill_plans())
        ]
        return AllRuns(
            [f.result() for f in kill_futures],
            {name: f.result() for name, f in signal_futures.items()},
            {name: f.result() for name, f in early_futures.items()},
        )


def _raw_records(path: Path) -> Iterator[dict]:
    """Every complete line of the journal as JSON (independent of read_journal's dedup)."""
    lines = path.read_bytes().split(b"\n")
    for line in lines[:-1]:  # the part after the last newline is a torn record (or empty)
        if line.strip():
            yield json.loads(line)


REPORTED_KEYS = ("index", "text", "start_s", "end_s", "language", "source", "delay_ms")


def _as_reported(segment_record: dict) -> dict:
    """A journal segment in the shape (and rounding) of the headless final event."""
    rounded = {"start_s": round(segment_record["start_s"], 3), "end_s": round(segment_record["end_s"], 3)}
    return {key: rounded.get(key, segment_record[key]) for key in REPORTED_KEYS}


def _the_journal(run: Run) -> tuple[Path, JournalContents]:
    paths = run.journal_paths()
    assert len(paths) == 1, f"expected one journal in {run.data_dir}, found {paths}\n{run.describe()}"
    return paths[0], read_journal(paths[0])


def _check_reported_in_journal(run: Run, path: Path, contents: JournalContents) -> list[dict]:
    """Every reported final is in the journal exactly once, in order, same text and times; returns
    the journal's segment records."""
    records = list(_raw_records(path))
    assert records and records[0]["type"] == "header", f"{path}: no header first\n{run.describe()}"
    assert contents.damaged_lines == 0, f"{path}: {contents.damaged_lines} damaged lines"
    journaled = [r for r in records if r["type"] == "segment"]
    twice = [index for index, n in Counter(r["index"] for r in journaled).items() if n > 1]
    assert not twice, f"{path}: segments journaled more than once: {twice}\n{run.describe()}"
    indices = [r["index"] for r in journaled]
    assert indices == sorted(indices), f"{path}: segments out of order: {indices}"
    assert [s.index for s in contents.segments] == indices, f"{path}: read_journal disagrees with the raw lines"
    reported = [{key: event[key] for key in REPORTED_KEYS} for event in run.reported_finals()]
    expected = [_as_reported(r) for r in journaled[: len(reported)]]
    assert reported == expected, (
        f"{path}: the finals printed before the kill are not the journal's first {len(reported)} segments "
        f"(printed {len(reported)}, journaled {len(journaled)})\n{run.describe()}"
    )
    # Segments journaled but not printed yet when the process died are fine: journal first, then print.
    return journaled


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
def test_sigkill_keeps_every_reported_final_exactly_once(runs: AllRuns, trial: int) -> None:
    run = runs.kills[trial]
    assert run.stopped_while_running, f"the process was not streaming when killed\n{run.describe()}"
    assert run.process.returncode == -signal.SIGKILL, run.describe()
    if run.kill_at_final is not None:
        assert len(run.reported_finals()) >= run.kill_at_final, run.describe()
    path, contents = _the_journal(run)
    _check_reported_in_journal(run, path, contents)
    assert not contents.ended_cleanly, f"{path}: an end record after SIGKILL?"
    assert contents.header.input_source == "file" and contents.header.device == "cpu", contents.header
    summaries = list_sessions(run.data_dir)
    assert [(s.path, s.status) for s in summaries] == [(path, "interrupted")], summaries
    assert summaries[0].segments == len(contents.segments)


def test_sigkill_trials_cover_the_stream(runs: AllRuns) -> None:
    """The trials are not vacuous: most had reported finals when killed, and the kills landed at
    different points of the stream."""
    reported = [len(run.reported_finals()) for run in runs.kills]
    assert sum(count > 0 for count in reported) >= KILL_TRIALS // 2, f"finals printed per trial: {reported}"
    assert len(set(reported)) >= 4, f"finals printed per trial: {reported}"


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_stop_signal_closes_the_journal_and_prints_its_path(runs: AllRuns, name: str) -> None:
    run = runs.signals[name]
    assert run.stopped_while_running, f"the process was not streaming when signalled\n{run.describe()}"
    code = run.process.returncode
    assert code is not None and code >= 0, f"{name} killed the process instead of stopping it\n{run.describe()}"
    path, contents = _the_journal(run)
    stderr = run.stderr.decode(errors="replace")
    stdout = b"".join(run.lines).decode(errors="replace")
    assert str(path) in stderr or str(path) in stdout, f"journal path {path} not printed on exit\n{run.describe()}"
    assert "Traceback" not in stderr, run.describe()
    assert contents.ended_cleanly and not contents.torn_tail, f"{path}: not closed cleanly\n{run.describe()}"
    assert contents.end is not None and contents.end["reason"] == name, contents.end
    assert contents.end["segments"] == len(contents.segments)
    journaled = _check_reported_in_journal(run, path, contents)
    # A clean stop prints what it journals: nothing may be journaled silently at the end.
    assert len(run.reported_finals()) == len(journaled), run.describe()
    assert journaled, f"{path}: no segment journaled although one was printed"
    assert contents.duration_s < INPUT_SECONDS - 5, "the stream ran to the end of the file: the signal did nothing"
    assert [(s.path, s.status) for s in list_sessions(run.data_dir)] == [(path, "complete")]


def test_ctrl_c_exits_with_status_130(runs: AllRuns) -> None:
    """The shell convention for a Ctrl+C exit (128 + SIGINT), which headless.py means to follow."""
    run = runs.signals["SIGINT"]
    assert run.process.returncode == 130, run.describe()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_stop_signal_at_the_start_closes_the_journal(runs: AllRuns, name: str) -> None:
    run = runs.early_signals[name]
    assert run.stopped_while_running, f"no journal appeared before the process ended\n{run.describe()}"
    code = run.process.returncode
    path, contents = _the_journal(run)
    stderr = run.stderr.decode(errors="replace")
    assert code is not None and code >= 0, f"{name} killed the process instead of stopping it\n{run.describe()}"
    assert "Traceback" not in stderr, run.describe()
    assert contents.ended_cleanly and contents.end is not None and contents.end["reason"] == name, (
        f"{path}: not closed cleanly\n{run.describe()}"
    )
    assert str(path) in stderr, f"journal path {path} not printed on exit\n{run.describe()}"


def _export(path: Path, fmt: str, output: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "export", str(path), "--format", fmt, "-o", str(output)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, f"voxcap export {fmt} failed: {done.stderr}"
    return output.read_text(encoding="utf-8")


def _check_cues(cues: list[tuple[float, float, str]], contents: JournalContents, fmt: str) -> None:
    """Cues read back by the parser: monotonic, same words in order, each inside its segment
    within one token (80 ms)."""
    segments = sorted((s for s in contents.segments if s.text.strip()), key=lambda s: (s.start_s, s.index))
    assert cues, f"{fmt}: no cues for {len(segments)} segments"
    for (start, end, text), (next_start, _, _) in zip(cues, [*cues[1:], (float("inf"), 0.0, "")], strict=True):
        assert start < end <= next_start + 1e-9, f"{fmt}: cue {text!r} {start}-{end} not monotonic"
    words = [(word, segment) for segment in segments for word in segment.text.split()]
    position = 0
    for start, end, text in cues:
        cue_words = text.split()
        assert [w for w, _ in words[position : position + len(cue_words)]] == cue_words, (
            f"{fmt}: cue {text!r} is not the next words of the journal"
        )
        segment = words[position][1]
        assert {s.index for _, s in words[position : position + len(cue_words)]} == {segment.index}
        assert segment.start_s - TOKEN_S <= start and end <= segment.end_s + TOKEN_S, (
            f"{fmt}: cue {text!r} {start}-{end} outside its segment {segment.start_s}-{segment.end_s}"
        )
        position += len(cue_words)
    assert position == len(words), f"{fmt}: {len(words) - position} words of the journal missing"


@pytest.mark.parametrize("source", ["SIGTERM", "SIGKILL"])
def test_exports_of_real_journals_parse(runs: AllRuns, source: str, tmp_path: Path) -> None:
    """`voxcap export` on a cleanly closed and on an interrupted journal: srt and webvtt-py read the
    files back with the journal's words and timings."""
    import srt
    import webvtt

    if source == "SIGTERM":
        run = runs.signals["SIGTERM"]
    else:  # the interrupted journal with the most segments
        run = max(runs.kills, key=lambda r: len(r.reported_finals()))
    path, contents = _the_journal(run)
    srt_text = _export(path, "srt", tmp_path / "out.srt")
    srt_cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(srt_text)]
    _check_cues(srt_cues, contents, "srt")
    _export(path, "vtt", tmp_path / "out.vtt")
    vtt_cues = [(_vtt_seconds(c.start), _vtt_seconds(c.end), c.text) for c in webvtt.read(str(tmp_path / "out.vtt"))]
    _check_cues(vtt_cues, contents, "vtt")


def _vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
