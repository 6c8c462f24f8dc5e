"""TimeBudgetBrain keeps the minutes trained in its checkpoint, so that a
resumed run goes on with what is left of the budget (the multi-process
behaviour is in test_ddp.py)."""

import torch

from speechbrain_pom.utils.checkpoints import SafeCheckpointer
from speechbrain_pom.utils.time_budget import TimeBudgetBrain


def brain_in(folder, max_train_minutes):
    return TimeBudgetBrain(
        max_train_minutes=max_train_minutes,
        modules={"model": torch.nn.Linear(2, 2)},
        checkpointer=SafeCheckpointer(folder),
    )


def test_resumed_run_counts_the_minutes_of_the_earlier_one(tmp_path):
    first = brain_in(tmp_path, max_train_minutes=10)
    first.minutes_before_this_run = 7.0  # as if it had trained 7 minutes
    first.checkpointer.save_checkpoint()

    resumed = brain_in(tmp_path, max_train_minutes=10)
    resumed.on_fit_start()
    assert 7.0 <= resumed.minutes_trained() < 7.5
    assert not resumed._optimizer_step_limit_exceeded

    over_budget = brain_in(tmp_path, max_train_minutes=5)
    over_budget.on_fit_start()
    assert over_budget._optimizer_step_limit_exceeded


def test_checkpoint_without_minutes_resumes_with_a_fresh_budget(tmp_path):
    first = brain_in(tmp_path, max_train_minutes=10)
    first.checkpointer.save_checkpoint()
    (brain_file,) = tmp_path.glob("CKPT*/brain.ckpt")
    lines = brain_file.read_text().splitlines()
    brain_file.write_text(
        "".join(f"{line}\n" for line in lines if "minutes_trained" not in line)
    )
    resumed = brain_in(tmp_path, max_train_minutes=10)
    resumed.on_fit_start()
    assert resumed.minutes_trained() < 0.5
