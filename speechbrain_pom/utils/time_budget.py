"""What this package's recipes share: a wall-clock training budget.

Authors
* speechbrain-pom contributors 2026
"""

import time

import speechbrain as sb
import yaml
from speechbrain.utils.distributed import (
    ddp_broadcast,
    if_main_process,
    is_distributed_initialized,
)


@sb.utils.checkpoints.register_checkpoint_hooks
class TimeBudgetBrain(sb.Brain):
    """A Brain that also stops training after ``max_train_minutes`` of wall clock
    (and that accepts ``--optimizer_step_limit`` from the command line).

    The minutes trained are kept in the checkpoint (beside SpeechBrain's step
    counters), so a resumed run goes on with what is left of the budget. The
    stop goes through SpeechBrain's own step-limit check, so the epoch ends
    cleanly with a validation pass and a checkpoint. Under DDP the main
    process's clock decides, every ``budget_check_interval`` steps, and its
    decision is broadcast: every rank stops at the same step, and no batch
    waits for a collective in between.

    Arguments
    ---------
    max_train_minutes : float
        The budget; 0 or None means none.
    budget_check_interval : int
        Under DDP, steps between two checks of the clock.
    **kwargs : dict
        Forwarded to ``speechbrain.Brain``.

    Example
    -------
    >>> import torch
    >>> brain = TimeBudgetBrain(
    ...     max_train_minutes=30, modules={"model": torch.nn.Linear(2, 2)}
    ... )
    >>> brain.on_fit_start()
    >>> brain.minutes_trained() < 30, brain._optimizer_step_limit_exceeded
    (True, False)
    """

    def __init__(self, max_train_minutes=0, budget_check_interval=50, **kwargs):
        super().__init__(**kwargs)
        self.max_train_minutes = max_train_minutes
        self.budget_check_interval = budget_check_interval
        self.minutes_before_this_run = 0.0
        self.fit_start_time = None
        self.budget_spent = False

    def on_fit_start(self):
        """Starts the clock, then lets SpeechBrain recover the checkpoint."""
        self.fit_start_time = time.time()
        super().on_fit_start()

    def minutes_trained(self):
        """Wall-clock minutes of training, earlier runs of this experiment
        included (as far as its last checkpoint)."""
        if self.fit_start_time is None:
            return self.minutes_before_this_run
        return self.minutes_before_this_run + (time.time() - self.fit_start_time) / 60

    def _time_budget_spent(self):
        if not self.max_train_minutes or self.budget_spent:
            return self.budget_spent
        if not is_distributed_initialized():
            self.budget_spent = self.minutes_trained() >= self.max_train_minutes
        elif self.step % self.budget_check_interval == 0:
            # Every rank reaches this check at the same steps.
            spent = if_main_process() and (
                self.minutes_trained() >= self.max_train_minutes
            )
            self.budget_spent = bool(ddp_broadcast(spent))
        return self.budget_spent

    @property
    def _optimizer_step_limit_exceeded(self):
        # SpeechBrain 1.1.2 passes --optimizer_step_limit on as a string.
        limit = self.optimizer_step_limit
        if limit is not None and self.optimizer_step >= int(limit):
            return True
        return self._time_budget_spent()

    @sb.utils.checkpoints.mark_as_saver
    def _save(self, path):
        super()._save(path)
        with open(path, encoding="utf-8") as fin:
            state = yaml.safe_load(fin)
        state["minutes_trained"] = self.minutes_trained()
        with open(path, "w", encoding="utf-8") as fout:
            yaml.dump(state, fout)

    @sb.utils.checkpoints.mark_as_loader
    def _recover(self, path, end_of_epoch):
        super()._recover(path, end_of_epoch)
        with open(path, encoding="utf-8") as fin:
            # Checkpoints written before the budget was kept hold no minutes.
            self.minutes_before_this_run = yaml.safe_load(fin).get(
                "minutes_trained", 0.0
            )
