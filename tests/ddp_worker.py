"""One rank of the 2-process gloo jobs of tests/test_ddp.py (run by
torch.distributed.run): ``python ddp_worker.py CASE FOLDER``. Each rank writes
what it saw to ``FOLDER/rank<R>.json``."""

import json
import os
import sys
import time

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_init_group

from speechbrain_pom.utils import time_budget
from speechbrain_pom.utils.checkpoints import SafeCheckpointer
from speechbrain_pom.utils.recipe_checks import OutputFolderLock, exit_on_refusal
from speechbrain_pom.utils.time_budget import TimeBudgetBrain


def report(folder, **seen):
    with open(os.path.join(folder, f"rank{RANK}.json"), "w") as fout:
        json.dump(seen, fout)


def locked_folder(folder):
    """The test holds the lock: every rank must refuse, none may hang."""
    try:
        with exit_on_refusal():
            OutputFolderLock(os.path.join(folder, "output"))
            # SpeechBrain's next barrier, where a rank that went on would wait.
            sb.create_experiment_directory(os.path.join(folder, "output"))
    except SystemExit as stop:
        report(folder, exit_code=stop.code)
        raise
    report(folder, exit_code=0)


class SlowBrain(TimeBudgetBrain):
    def compute_forward(self, batch, stage):
        time.sleep(0.02)
        return self.modules.model(batch)

    def compute_objectives(self, predictions, batch, stage):
        return predictions.pow(2).mean()


def time_budget_on_main_clock(folder):
    """Rank 1's clock says the budget is spent from the start; rank 0's
    decides, every 5 steps, with one broadcast per check."""
    broadcasts = []
    broadcast = time_budget.ddp_broadcast

    def counted_broadcast(value):
        broadcasts.append(value)
        return broadcast(value)

    time_budget.ddp_broadcast = counted_broadcast
    brain = SlowBrain(
        max_train_minutes=3 / 60,
        budget_check_interval=5,
        modules={"model": torch.nn.Linear(2, 1)},
        opt_class=lambda params: torch.optim.SGD(params, lr=0.01),
        run_opts={"device": "cpu", "distributed_backend": "gloo"},
    )
    if RANK == 1:
        brain.minutes_trained = lambda: 1e9
    train = torch.utils.data.DataLoader(torch.randn(1000, 2), batch_size=1)
    valid = torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=1)
    brain.fit(range(1, 2), train, valid)
    report(folder, optimizer_step=brain.optimizer_step, broadcasts=len(broadcasts))


def recovery_chosen_on_main(folder):
    """Rank 1 cannot read the newest checkpoint; both load it all the same."""
    model = torch.nn.Linear(2, 1, bias=False)
    checkpointer = SafeCheckpointer(os.path.join(folder, "save"), {"model": model})
    if RANK == 1:
        checkpointer._read_checkpoint = lambda checkpoint: ("unreadable", None)
    checkpoint = checkpointer.recover_if_possible()
    report(folder, loaded=str(checkpoint.path), weight=model.weight.sum().item())


if __name__ == "__main__":
    RANK = int(os.environ["RANK"])
    case, folder = sys.argv[1:]
    ddp_init_group({"distributed_backend": "gloo", "device": "cpu"})
    try:
        {
            "locked_folder": locked_folder,
            "time_budget": time_budget_on_main_clock,
            "recovery": recovery_chosen_on_main,
        }[case](folder)
    finally:
        # Leave together and tear the group down: a rank that exits while
        # gloo's threads still serve the other can abort at shutdown
        # ("terminate called without an active exception", seen once).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
