"""Multi-process runs (torchrun, 2 CPU processes, gloo): every rank stops on
a locked output folder, loads the checkpoint the main rank chose, and stops
on the main rank's clock at the same step."""

import json
import os
import subprocess
import sys

import torch

from speechbrain_pom.utils.checkpoints import SafeCheckpointer
from speechbrain_pom.utils.recipe_checks import OutputFolderLock

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_worker.py")
LOCKED_MESSAGE = "is the output folder of a run that is still going"


def run_two_ranks(case, folder):
    """Runs ``ddp_worker.py case folder`` on 2 ranks; returns the job's result
    and what each rank reported (None for a rank that reported nothing)."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        + ["--standalone", WORKER, case, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    reports = []
    for rank in (0, 1):
        path = folder / f"rank{rank}.json"
        reports.append(json.loads(path.read_text()) if path.exists() else None)
    return result, reports


def test_every_rank_stops_on_a_locked_output_folder(tmp_path):
    held = OutputFolderLock(tmp_path / "output")
    try:
        result, reports = run_two_ranks("locked_folder", tmp_path)
    finally:
        held.release()
    assert result.returncode != 0
    assert reports == [{"exit_code": 2}, {"exit_code": 2}], result.stderr[-3000:]
    assert result.stderr.count(LOCKED_MESSAGE) == 2


def test_every_rank_loads_the_checkpoint_the_main_rank_chose(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    checkpointer = SafeCheckpointer(tmp_path / "save", {"model": model})
    for value in (1.0, 2.0):
        torch.nn.init.constant_(model.weight, value)
        checkpointer.save_checkpoint()
    newest = checkpointer.find_checkpoints()[0]
    result, reports = run_two_ranks("recovery", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [report["loaded"] for report in reports] == [str(newest.path)] * 2
    assert [report["weight"] for report in reports] == [4.0, 4.0]


def test_time_budget_stops_every_rank_on_the_main_clock_without_per_step_sync(
    tmp_path,
):
    result, reports = run_two_ranks("time_budget", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = {report["optimizer_step"] for report in reports}
    assert len(steps) == 1, reports
    (step,) = steps
    # Rank 1's clock would have stopped both at step 0; the budget (3 s of
    # 20 ms steps) ends well before the 1000 batches.
    assert 5 <= step < 1000 and step % 5 == 0, reports
    for report in reports:
        assert report["broadcasts"] <= step // 5 + 2, reports
