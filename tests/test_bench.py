"""``voxcap bench`` end to end on a tiny model on CPU: what it reports, its profile, its errors.

The figures themselves are not asserted (the suite never times anything); their consistency is:
the step count matches the audio streamed, the total is encoder plus decoder, the profile's rows
add up to its busy time and are the operators that really ran.
"""

from __future__ import annotations

import json

import pytest
import torch

from tui.cli import main


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["bench", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_report_is_consistent(tiny_model_dir, capsys) -> None:
    rc, out, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "1.2",
                       "--context", "5", "--json")  # fmt: skip
    assert rc == 0
    r = json.loads(out)
    assert r["device"] == "cpu" and r["delay_ms"] == 480 and r["context"] == 5
    assert r["steps"] == 15  # 1.2 s of 80 ms steps, timed after the 5 context steps
    assert 0 < r["encoder_ms_p50"] <= r["encoder_ms_p99"] and 0 < r["decoder_ms_p50"] <= r["decoder_ms_p99"]
    assert r["total_ms_p50"] == pytest.approx(r["encoder_ms_p50"] + r["decoder_ms_p50"])
    assert r["first_token_ms"] > 0 and r["load_s"] > 0 and r["rtf"] > 0
    assert r["memory"]["process_rss"] > 0
    assert r["profile"] == [] and r["profile_busy_ms"] is None  # no --profile


def test_profile_lists_the_operators_that_ran(tiny_model_dir, capsys) -> None:
    rc, out, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "0.8",
                       "--profile", "4", "--json")  # fmt: skip
    assert rc == 0
    r = json.loads(out)
    assert r["steps"] == 10  # the profiled steps are not in the timed figures
    assert r["profile_steps"] == 4
    rows = r["profile"]
    times = [row["us_per_step"] for row in rows]
    assert times == sorted(times, reverse=True) and times[-1] > 0
    assert r["profile_busy_ms"] == pytest.approx(sum(times) / 1000)
    names = {row["name"] for row in rows}
    # The tiny model's linear layers and attention ran on CPU: their operators must be there.
    assert {"aten::mm", "aten::addmm"} & names
    assert any("scaled_dot_product" in name for name in names)
    # And the text report prints the table.
    rc, text, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "0.4",
                        "--profile", "2")  # fmt: skip
    assert rc == 0
    assert "CPU operators (self time), over 2 steps" in text
    assert "aten::" in text.split("profile", 1)[1]


def test_profile_feeds_whole_chunks(tiny_model_dir, capsys) -> None:
    """3 profiled steps in 160 ms feeds: rounded up to two whole feeds (a short one would need an
    encoder graph never captured, whose capture would be profiled), so 4 steps."""
    rc, out, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "0.64",
                       "--chunk-ms", "160", "--profile", "3", "--json")  # fmt: skip
    assert rc == 0
    r = json.loads(out)
    assert (r["steps"], r["profile_steps"]) == (8, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_profile_lists_the_graphed_kernels(tiny_model_dir, capsys) -> None:
    """On CUDA the rows are GPU kernels replayed from the step graphs: voxcap's Triton kernels."""
    rc, out, _ = bench(capsys, "--model", str(tiny_model_dir), "--seconds", "0.8", "--profile", "5", "--json")
    assert rc == 0
    r = json.loads(out)
    assert r["device"].startswith("cuda") and r["profile_steps"] == 5
    names = {row["name"] for row in r["profile"]}
    assert {"_attention_split_kernel", "_rmsnorm_kernel"} <= names
    assert 0 < r["profile_busy_ms"] < r["total_ms_p50"] * 10
    assert 0 <= r["profile_bubbles_ms"] < r["total_ms_p50"] * 10


def test_short_gaps_count_idle_between_overlapping_kernels() -> None:
    """Idle time is measured between the union of kernel intervals; long gaps (host time) are left
    out."""
    from asr.bench import _short_gaps_us

    # [0, 10] and [5, 12] overlap, so the gaps are 12..15, 17..18 and 20..100 (too long).
    intervals = [(18.0, 20.0), (0.0, 10.0), (15.0, 17.0), (5.0, 12.0), (100.0, 101.0)]
    assert _short_gaps_us(intervals, 20.0) == 4.0
    assert _short_gaps_us(intervals, 100.0) == 84.0


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default:UserWarning")
def test_compare_reference_reports_the_ratio(tiny_model_dir, capsys) -> None:
    """transformers' implementation timed on the same tiny weights and device, and the ratio."""
    rc, out, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "0.4",
                       "--compare-reference", "--json")  # fmt: skip
    assert rc == 0
    r = json.loads(out)
    assert r["reference_step_ms"] > 0
    assert r["speedup"] == pytest.approx(r["reference_step_ms"] / r["total_ms_p50"])


@pytest.mark.parametrize(("args", "message"), [
    (["--chunk-ms", "15"], "--chunk-ms must be a positive multiple of 10"),
    (["--context", "-1"], "--context must be 0 or more steps"),
    (["--profile", "-2"], "--profile must be 0 or more steps"),
    (["--ab", "pdl", "--repeat", "0"], "--repeat must be 1 or more rounds"),
    (["--ab", "pdl", "--compare-reference"], "--ab and --compare-reference are separate runs: pick one"),
])  # fmt: skip
def test_bad_arguments_are_named(capsys, args, message) -> None:
    rc, out, err = bench(capsys, "--random", "--quant", "q4_0", "--compute-device", "cpu", *args)
    assert rc == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_ab_alternates_the_settings_and_runs_each_under_its_own(tiny_model_dir, capsys, monkeypatch) -> None:
    """--ab runs the benchmark once per setting per round, in turn, each with its setting applied
    while its stream (and so its graphs) is built, and restored afterwards."""
    import asr.bench
    from asr import prefetch

    seen = []
    real = asr.bench.benchmark

    def spy(model, **kwargs):
        seen.append(prefetch.settings.mode)
        return real(model, **kwargs)

    monkeypatch.setattr(asr.bench, "benchmark", spy)
    before = prefetch.settings.mode
    rc, out, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "0.4",
                       "--ab", "l2-prefetch", "--repeat", "2", "--json")  # fmt: skip
    assert rc == 0
    r = json.loads(out)
    assert r["knob"] == "l2-prefetch"
    assert [run["setting"] for run in r["runs"]] == ["0", "bulk", "lines"] * 2 == seen
    assert all(run["steps"] == 5 for run in r["runs"])
    assert prefetch.settings.mode == before
    rc, text, _ = bench(capsys, "--model", str(tiny_model_dir), "--compute-device", "cpu", "--seconds", "0.24",
                        "--ab", "pdl", "--repeat", "1")  # fmt: skip
    assert rc == 0
    lines = text.splitlines()
    assert lines[0].startswith("voxcap bench --ab pdl:")
    assert [line.split()[0] for line in lines[2:4]] == ["on", "off"]
    assert "median total" in lines[-1] and "x of on" in lines[-1]


def test_the_cli_names_every_ab_knob_the_engine_has() -> None:
    from asr.bench import AB_KNOBS
    from tui.commands.bench import AB_KNOBS as CLI_KNOBS

    assert CLI_KNOBS == tuple(AB_KNOBS)
