"""End-to-end tests of benchmarks/train_lengths.py (run as a subprocess)."""

import csv
import json
from pathlib import Path

import pytest
from conftest import run_benchmark_script

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "train_lengths.py"
MIXERS = (
    "pom",
    "pom_c",
    "pom_k2e1",
    "summarymixing",
    "hypermixing",
    "RelPosMHAXL",
    "RoPEMHA",
)
REFERENCES = ("RelPosMHAXL", "summarymixing")
MODES = ("forward", "forward_backward")
QUICK_FRAMES = (25, 50)  # 1 and 2 s at 25 encoder frames per second
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_benchmark(out_dir, *options):
    """Runs the benchmark script into ``out_dir`` and returns its stdout."""
    return run_benchmark_script(SCRIPT, out_dir, *options, timeout=400)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The --quick run: every mixer, a tiny model, 1 and 2 s."""
    out_dir = tmp_path_factory.mktemp("train_lengths")
    return out_dir, run_benchmark(out_dir, "--quick")


def test_every_mixer_length_and_mode_is_measured(quick_run):
    out_dir, _ = quick_run
    rows = json.loads((out_dir / "results.json").read_text())
    assert sorted((r["mixer"], r["length_frames"], r["mode"]) for r in rows) == sorted(
        (mixer, frames, mode)
        for mixer in MIXERS
        for frames in QUICK_FRAMES
        for mode in MODES
    )
    for row in rows:
        assert row["status"] == "ok", row
        assert row["scope"] == "train-tiny"
        assert row["batch"] == 6
        assert row["audio_seconds"] == row["length_frames"] / 25
        assert row["time_s_median"] > 0 and row["peak_mem_delta_mib"] > 0
    params = {row["mixer"]: row["params"] for row in rows}
    # Formulation A's parameters grow with degree and expansion.
    assert params["pom"] > params["pom_k2e1"] > 0
    assert len(read_csv(out_dir / "results.csv")) == len(rows)


def test_ratios_follow_from_the_rows(quick_run):
    out_dir, stdout = quick_run
    rows = json.loads((out_dir / "results.json").read_text())
    ratios = json.loads((out_dir / "ratios.json").read_text())
    measured = {(r["mixer"], r["length_frames"], r["mode"]): r for r in rows}
    assert len(ratios) == len(rows) * len(REFERENCES)
    for ratio in ratios:
        row = measured[ratio["mixer"], ratio["length_frames"], ratio["mode"]]
        base = measured[ratio["reference"], ratio["length_frames"], ratio["mode"]]
        assert ratio["time_ratio"] == pytest.approx(
            row["time_s_median"] / base["time_s_median"]
        )
        assert ratio["memory_ratio"] == pytest.approx(
            row["peak_mem_delta_mib"] / base["peak_mem_delta_mib"]
        )
        assert ratio["memory_raw_ratio"] == pytest.approx(
            row["peak_mem_mib"] / base["peak_mem_mib"]
        )
        if ratio["mixer"] == ratio["reference"]:
            assert ratio["time_ratio"] == ratio["memory_ratio"] == 1
    written = read_csv(out_dir / "ratios.csv")
    assert [(r["mixer"], r["reference"]) for r in written] == [
        (r["mixer"], r["reference"]) for r in ratios
    ]
    for reference in REFERENCES:
        for mode in MODES:
            assert f"mixer / {reference}, {mode} " in stdout


def test_plots_and_machine_record(quick_run):
    out_dir, _ = quick_run
    for name in ("time_train-tiny.png", "memory_train-tiny.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG_SIGNATURE
    machine = json.loads((out_dir / "machine.json").read_text())
    assert machine["scales"]["train-tiny"]["d_model"] == 48
    assert machine["autocast"] is None


def test_over_budget_is_recorded_as_skipped_and_left_out_of_ratios(tmp_path):
    run_benchmark(
        tmp_path,
        "--mixers",
        "pom",
        "RelPosMHAXL",
        "--seconds",
        "80",
        "--modes",
        "forward_backward",
        "--mem-budget-gib",
        "0.001",
    )
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [row["mixer"] for row in rows] == ["pom", "RelPosMHAXL"]
    for row in rows:
        assert row["status"].startswith("skipped: memory, predicted")
        assert row["scope"] == "train-paper" and row["length_frames"] == 2000
    assert json.loads((tmp_path / "ratios.json").read_text()) == []
