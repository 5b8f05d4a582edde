"""Fuzz the GGUF loader: random mutations of the header, metadata and tensor infos of small valid
files must each end in a clean AsrError or a correct load, quickly and without huge allocations."""

from __future__ import annotations

import resource
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from asr.errors import AsrError
from asr.weights.gguf_model import load_gguf
from asr.weights.gguf_reader import GGUFFile
from tests.gguf_fixtures import (
    tiny_canonical_weights,
    tiny_config,
    write_transcribe_cpp_gguf,
    write_trevors_gguf,
)

CASE_LIMIT_S = 10  # a hang detector, far above the ~20 ms a case takes
INTERESTING_U64 = [0, 1, 2, 3, 4, 31, 32, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40,
                   2**62, 2**63, 2**64 - 1]


class CaseTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum, frame):
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mutate(data: bytes, header_end: int, rng: np.random.Generator) -> bytes:
    """One to four random edits inside ``data[:header_end]`` (magic, counts, metadata, tensor infos).

    A third of the edits land in the first 64 bytes (magic, version, counts, first keys) and a
    third in the last 4 KiB of the header (model metadata and tensor infos), so the long
    vocabulary arrays in between do not soak up most of them.
    """
    out = bytearray(data)
    regions = [(0, min(64, header_end)), (max(0, header_end - 4096), header_end), (0, header_end)]
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.integers(0, 5)
        low, high = regions[int(rng.integers(0, 3))]
        at = int(rng.integers(low, high))
        if kind == 0:  # flip bits of one byte
            out[at] ^= int(rng.integers(1, 256))
        elif kind == 1:  # a random byte
            out[at] = int(rng.integers(0, 256))
        elif kind == 2:  # an "interesting" 64-bit value (lengths, counts, offsets, dims)
            value = INTERESTING_U64[int(rng.integers(0, len(INTERESTING_U64)))]
            out[at : at + 8] = struct.pack("<Q", value)[: len(out) - at]
        elif kind == 3:  # an interesting 32-bit value (types, versions, n_dims)
            value = int(rng.choice([0, 1, 2, 3, 8, 9, 12, 13, 14, 15, 30, 31, 39, 255, 2**31, 2**32 - 1]))
            out[at : at + 4] = struct.pack("<I", value)[: len(out) - at]
        else:  # truncate
            return bytes(out[: int(rng.integers(0, len(out)))])
    return bytes(out)


def run_cases(source: Path, work: Path, n_cases: int, seed: int) -> dict[str, int]:
    data = source.read_bytes()
    for companion in ("params.json", "tekken.json"):  # TrevorS files read these from beside them
        if (source.parent / companion).is_file():
            (work / companion).write_bytes((source.parent / companion).read_bytes())
    header_end = GGUFFile(source).data_offset
    rng = np.random.default_rng(seed)
    outcomes = {"error": 0, "loaded": 0}
    for case in range(n_cases):
        path = work / f"case{case}.gguf"
        path.write_bytes(mutate(data, header_end, rng))
        try:
            with time_limit(CASE_LIMIT_S):
                checkpoint = load_gguf(path)
                checkpoint.validate()  # a load must be a complete, consistent checkpoint
                outcomes["loaded"] += 1
        except AsrError:
            outcomes["error"] += 1
        except CaseTimeout:
            pytest.fail(f"fuzz case {case} (seed {seed}) took over {CASE_LIMIT_S} s: {path}")
        except Exception as error:  # anything else is a crash the user would see as a traceback
            pytest.fail(f"fuzz case {case} (seed {seed}) raised {type(error).__name__}: {error} ({path})")
        else:
            del checkpoint
        path.unlink()
    return outcomes


@pytest.fixture(scope="module")
def fuzz_sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    config = tiny_config(vocab_size=1100, n_layers=1)
    weights = tiny_canonical_weights(config)
    tc = write_transcribe_cpp_gguf(folder / "tc.gguf", config, weights, "Q4_K_M").path
    ts = write_trevors_gguf(folder / "ts.gguf", config, weights).path
    load_gguf(tc), load_gguf(ts)  # both load before mutation
    return tc, ts


def test_fuzzed_headers_fail_cleanly_or_load(tmp_path, fuzz_sources):
    tc, ts = fuzz_sources
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tc_outcomes = run_cases(tc, tmp_path, 1000, seed=1)
    ts_outcomes = run_cases(ts, tmp_path, 300, seed=2)
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    # the mutations really hit: most cases are refused, some still load
    assert tc_outcomes["error"] > 500 and ts_outcomes["error"] > 150
    assert tc_outcomes["loaded"] > 0 and ts_outcomes["loaded"] > 0
    assert peak_growth_mib < 256, f"a fuzz case allocated {peak_growth_mib:.0f} MiB"
