"""What this package's recipes share: a wall-clock training budget.

Authors
* speechbrain-pom contributors 2026
"""

import time

import speechbrain as sb
import torch


class TimeBudgetBrain(sb.Brain):
    """A Brain that also stops training after ``max_train_minutes`` of wall clock
    (and that accepts ``--optimizer_step_limit`` from the command line).

    The budget counts from the start of ``fit`` in this process. The stop goes
    through SpeechBrain's own step-limit check, so the epoch ends cleanly with a
    validation pass and a checkpoint. Under DDP the ranks agree (all-reduce) so
    that none waits forever for another.

    Arguments
    ---------
    max_train_minutes : float
        The budget; 0 or None means none.
    **kwargs : dict
        Forwarded to ``speechbrain.Brain``.

    Example
    -------
    >>> brain = TimeBudgetBrain(
    ...     max_train_minutes=30, modules={"model": torch.nn.Linear(2, 2)}
    ... )
    >>> brain.on_fit_start()
    >>> brain.minutes_trained() < 30, brain._optimizer_step_limit_exceeded
    (True, False)
    """

    def __init__(self, max_train_minutes=0, **kwargs):
        super().__init__(**kwargs)
        self.max_train_minutes = max_train_minutes

    def on_fit_start(self):
        """Starts the clock, then lets SpeechBrain recover the checkpoint."""
        self.fit_start_time = time.time()
        super().on_fit_start()

    def minutes_trained(self):
        """Wall-clock minutes since ``fit`` started."""
        return (time.time() - self.fit_start_time) / 60.0

    @property
    def _optimizer_step_limit_exceeded(self):
        budget = self.max_train_minutes
        spent = bool(budget) and self.minutes_trained() >= budget
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor(float(spent), device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            spent = bool(flag.item())
        # SpeechBrain 1.1.2 passes --optimizer_step_limit on as a string.
        limit = self.optimizer_step_limit
        return spent or (limit is not None and self.optimizer_step >= int(limit))
