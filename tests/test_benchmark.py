"""End-to-end tests of benchmarks/mixer_scaling.py (run as a subprocess)."""

import csv
import json
from pathlib import Path

import pytest
from conftest import run_benchmark_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mixer_scaling.py"
EXPECTED_COLUMNS = [
    "mixer",
    "scope",
    "length_frames",
    "audio_seconds",
    "batch",
    "mode",
    "time_s_median",
    "time_s_all",
    "peak_mem_mib",
    "peak_mem_delta_mib",
    "memory_measure",
    "params",
    "mixer_options",
    "threads",
    "device",
    "autocast",
    "status",
]
MACHINE_FIELDS = (
    "cpu_model",
    "threads",
    "torch_version",
    "speechbrain_version",
    "gpu",
    "date",
    "command_line",
    "child_environment",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_benchmark(out_dir, *options):
    """Runs the benchmark script into ``out_dir`` and returns its stdout."""
    return run_benchmark_script(SCRIPT, out_dir, *options, timeout=300)


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A quick run of two mixers at two lengths, mixer scope only."""
    out_dir = tmp_path_factory.mktemp("bench")
    stdout = run_benchmark(
        out_dir,
        "--quick",
        "--mixers",
        "pom",
        "summarymixing",
        "--lengths",
        "25",
        "50",
        "--repeats",
        "1",
        "--scopes",
        "mixer",
    )
    return out_dir, stdout


def test_csv_has_expected_columns_and_rows(quick_run):
    out_dir, _ = quick_run
    columns, rows = read_csv(out_dir / "results.csv")
    assert columns == EXPECTED_COLUMNS
    configurations = {(row["mixer"], row["length_frames"], row["mode"]) for row in rows}
    assert configurations == {
        (mixer, length, mode)
        for mixer in ("pom", "summarymixing")
        for length in ("25", "50")
        for mode in ("forward", "forward_backward")
    }
    assert len(rows) == 8
    for row in rows:
        assert row["status"] == "ok"
        assert row["scope"] == "mixer"
        assert row["batch"] == "8"
        assert float(row["time_s_median"]) > 0
        assert float(row["peak_mem_mib"]) > 0
        assert float(row["peak_mem_delta_mib"]) > 0
        assert int(row["params"]) > 0
        assert float(row["audio_seconds"]) == int(row["length_frames"]) / 25


def test_json_matches_csv(quick_run):
    out_dir, _ = quick_run
    records = json.loads((out_dir / "results.json").read_text())
    _, rows = read_csv(out_dir / "results.csv")
    assert len(records) == len(rows)
    for record, row in zip(records, rows, strict=True):
        assert set(record) == set(EXPECTED_COLUMNS)
        assert (record["mixer"], str(record["length_frames"]), record["mode"]) == (
            row["mixer"],
            row["length_frames"],
            row["mode"],
        )
        assert record["time_s_median"] == pytest.approx(float(row["time_s_median"]))
        assert len(record["time_s_all"]) == 1


def test_machine_json_has_fields(quick_run):
    out_dir, _ = quick_run
    machine = json.loads((out_dir / "machine.json").read_text())
    for field in MACHINE_FIELDS:
        assert field in machine
    assert machine["threads"] == 2
    assert "MALLOC_TRIM_THRESHOLD_" in machine["child_environment"]


def test_plots_are_png(quick_run):
    out_dir, _ = quick_run
    for name in ("time_mixer.png", "memory_mixer.png"):
        assert (out_dir / name).read_bytes()[:8] == PNG_SIGNATURE


def test_targets_are_written_and_printed(quick_run):
    out_dir, stdout = quick_run
    targets = json.loads((out_dir / "targets.json").read_text())
    assert len(targets) == 7
    # 3000 frames were not measured: nothing can pass or miss.
    assert all(target["status"].startswith("not measured") for target in targets)
    assert "Targets" in stdout


def test_config_over_memory_budget_is_skipped(tmp_path):
    stdout = run_benchmark(
        tmp_path,
        "--mixers",
        "RelPosMHAXL",
        "--lengths",
        "750",
        "--repeats",
        "1",
        "--scopes",
        "mixer",
        "--modes",
        "forward_backward",
        "--mem-budget-gib",
        "0.001",
    )
    _, rows = read_csv(tmp_path / "results.csv")
    assert len(rows) == 1
    assert rows[0]["status"].startswith("skipped: memory")
    assert "--mem-budget-gib" in rows[0]["status"]
    assert rows[0]["time_s_median"] == ""
    assert "skipped: memory" in stdout
