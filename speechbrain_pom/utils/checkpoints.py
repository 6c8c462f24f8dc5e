"""Checkpoints that survive a crash, for SpeechBrain's ``Checkpointer``.

SpeechBrain 1.1.2 creates the final ``CKPT+...`` folder, writes ``CKPT.yaml``
and then each file in place, and recovery takes the newest folder. A run
killed during a save (kill -9, out of memory, a full disk) leaves a folder
that every later run picks and fails on. ``SafeCheckpointer`` writes each
checkpoint into a hidden staging folder and renames it into place only when
every file is written (a rename within a folder is atomic). Its recovery
skips a checkpoint with a missing or unreadable file, with a warning that
names it, for the next one in the usual order; but a readable checkpoint that
does not fit the model (a rerun with another size, mixer or vocabulary) stops
the run before anything is loaded, since training afresh beside it would
delete it after a few saves. SpeechBrain is not modified.

Authors
* speechbrain-pom contributors 2026
"""

import logging
import os
import shutil

import torch
import yaml
from speechbrain.utils.checkpoints import (
    DEFAULT_LOAD_HOOKS,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    get_default_hook,
    torch_patched_state_dict_load,
    torch_recovery,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process
from speechbrain.utils.logger import get_logger

from speechbrain_pom.utils.state_dicts import compare_state_dicts, describe_mismatch

logger = get_logger(__name__)

# Checkpoints being written; not a CKPT+ name, so SpeechBrain never lists them.
STAGING_PREFIX = ".staging-"
# A named checkpoint being replaced by a new save of the same name.
REPLACED_PREFIX = ".replaced-"


class CheckpointMismatchError(RuntimeError):
    """A checkpoint that does not fit the model: the run stops and keeps it."""


def _fsync(path, directory=False):
    """Flushes a file (or a folder's entries) to the disk."""
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class SafeCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` with crash-safe saving and recovery.

    Takes the same arguments as ``speechbrain.utils.checkpoints.Checkpointer``
    and is used in the same places (``!new:`` in a yaml, ``Brain``).

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> model = torch.nn.Linear(2, 2)
    >>> checkpointer = SafeCheckpointer(folder, {"model": model})
    >>> checkpoint = checkpointer.save_checkpoint(meta={"loss": 1.0})
    >>> sorted(os.listdir(folder)) == [checkpoint.path.name]
    True
    >>> sorted(path.name for path in checkpoint.paramfiles.values())
    ['model.ckpt']
    >>> (checkpoint.path / "model.ckpt").write_bytes(b"truncated")  # a broken file
    9
    >>> checkpointer.recover_if_possible() is None  # skipped, with a warning
    True
    >>> checkpoint = checkpointer.save_checkpoint()
    >>> other = SafeCheckpointer(folder, {"model": torch.nn.Linear(2, 3)})
    >>> other.recover_if_possible()
    Traceback (most recent call last):
    ...
    speechbrain_pom.utils.checkpoints.CheckpointMismatchError: the checkpoint ...
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._final_path = None

    def _stage(self, final_path):
        self._final_path = final_path
        return final_path.parent / f"{STAGING_PREFIX}{final_path.name}"

    def _new_checkpoint_dirpath(self):
        return self._stage(super()._new_checkpoint_dirpath())

    def _custom_checkpoint_dirpath(self, name):
        return self._stage(super()._custom_checkpoint_dirpath(name))

    def save_checkpoint(
        self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):
        """Saves a checkpoint, which appears whole or not at all.

        Arguments and return value as ``Checkpointer.save_checkpoint``.
        """
        if if_main_process():
            self._clean_up_interrupted_saves()
        staged = super().save_checkpoint(
            meta=meta or {},
            end_of_epoch=end_of_epoch,
            name=name,
            verbosity=logging.DEBUG,
        )
        # Every process has written its files before the folder is published.
        ddp_barrier()
        if staged is None:  # not the main process
            return None
        final = self._final_path
        for path in staged.path.iterdir():
            _fsync(path)
        _fsync(staged.path, directory=True)
        # A named checkpoint saved again: the old one is renamed aside first,
        # so that a kill at any moment leaves one whole checkpoint of that name
        # (or its old copy aside, which recovery puts back).
        replaced = final.parent / f"{REPLACED_PREFIX}{final.name}"
        if final.exists():
            os.rename(final, replaced)
        os.rename(staged.path, final)
        _fsync(final.parent, directory=True)
        shutil.rmtree(replaced, ignore_errors=True)
        logger.log(verbosity, f"Saved a checkpoint in {final}")
        return Checkpoint(
            final,
            staged.meta,
            {key: final / path.name for key, path in staged.paramfiles.items()},
        )

    def _clean_up_interrupted_saves(self):
        """Removes what a killed save left behind, and puts back a checkpoint
        renamed aside whose replacement never came in."""
        for path in self.checkpoints_dir.glob(f"{STAGING_PREFIX}*"):
            logger.warning(f"Removing an unfinished checkpoint: {path}")
            shutil.rmtree(path, ignore_errors=True)
        for path in self.checkpoints_dir.glob(f"{REPLACED_PREFIX}*"):
            final = path.parent / path.name[len(REPLACED_PREFIX) :]
            if final.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                logger.warning(f"Putting back {final}: its re-save was killed")
                os.rename(path, final)

    @staticmethod
    def _construct_checkpoint_objects(checkpoint_dirs):
        """As SpeechBrain's, but a folder whose ``CKPT.yaml`` cannot be read
        is skipped with a warning instead of stopping the listing."""
        checkpoints = []
        for folder in checkpoint_dirs:
            try:
                (checkpoint,) = Checkpointer._construct_checkpoint_objects([folder])
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
                logger.warning(f"Skipping checkpoint {folder}: unreadable ({error})")
                continue
            if not isinstance(checkpoint.meta, dict):
                logger.warning(f"Skipping checkpoint {folder}: its CKPT.yaml is empty")
                continue
            checkpoints.append(checkpoint)
        return checkpoints

    def recover_if_possible(
        self, importance_key=None, max_key=None, min_key=None, ckpt_predicate=None
    ):
        """Loads the best checkpoint that can be read, or stops the run if
        it does not fit the model.

        Candidates are taken in SpeechBrain's order (newest, or by
        ``importance_key`` / ``max_key`` / ``min_key``). One with a missing,
        empty or unreadable file is skipped with a warning that names it; the
        first readable one is checked against the recoverables (keys and
        shapes of modules, parameter groups of optimisers) before anything is
        loaded. Under DDP the main process chooses and the others load its
        choice.

        Arguments
        ---------
        importance_key, max_key, min_key, ckpt_predicate
            As ``Checkpointer.find_checkpoints``.

        Returns
        -------
        Checkpoint or None
            The checkpoint loaded, or None if none could be read.

        Raises
        ------
        CheckpointMismatchError
            If the checkpoint chosen does not fit the recoverables (nothing is
            loaded) or fails to load after its checks (the state is partly
            loaded, so the run must not go on). Nothing is deleted.
        """
        choice = None
        if if_main_process():
            self._clean_up_interrupted_saves()
            choice = self._choose_checkpoint(
                self.find_checkpoints(importance_key, max_key, min_key, ckpt_predicate)
            )
        checkpoint, mismatch = ddp_broadcast(choice) or (None, None)
        if mismatch is not None:
            raise CheckpointMismatchError(
                f"the checkpoint {checkpoint.path} does not fit this run: "
                f"{mismatch}. Nothing was loaded or deleted; to start afresh, "
                "choose another output folder."
            )
        if checkpoint is None:
            return None
        try:
            self.load_checkpoint(checkpoint)
        except Exception as error:  # noqa: BLE001 (any loader's error)
            raise CheckpointMismatchError(
                f"the checkpoint {checkpoint.path} passed its checks but failed "
                f"to load ({type(error).__name__}: {error}); the run stops "
                "rather than train from a partly loaded state. Nothing was "
                "deleted."
            ) from error
        return checkpoint

    def _choose_checkpoint(self, candidates):
        """The first candidate that can be read, and why it does not fit.

        Arguments
        ---------
        candidates : list of Checkpoint
            Best first.

        Returns
        -------
        tuple or None
            ``(checkpoint, mismatch)``, mismatch None if it fits; None if no
            candidate can be read.
        """
        for checkpoint in candidates:
            damage, states = self._read_checkpoint(checkpoint)
            if damage is not None:
                logger.warning(
                    f"Skipping checkpoint {checkpoint.path}: {damage}; trying "
                    "an older one."
                )
                continue
            return checkpoint, self._find_mismatch(checkpoint, states)
        if candidates:
            logger.warning(
                f"None of the {len(candidates)} checkpoints in "
                f"{self.checkpoints_dir} could be read; starting afresh."
            )
        else:
            logger.info("Would load a checkpoint here, but none found yet.")
        return None

    def _read_checkpoint(self, checkpoint):
        """Reads the files of a checkpoint, changing no recoverable.

        Returns
        -------
        damage : str or None
            Why the checkpoint cannot be read (a file missing, empty or
            unreadable), or None.
        states : dict
            ``{name: state_dict}`` of the recoverables loaded by
            ``torch_recovery`` (modules, optimisers, schedulers).
        """
        states = {}
        for name, obj in self.recoverables.items():
            path = checkpoint.paramfiles.get(name)
            if path is None:
                if self._may_lack(name):
                    continue
                return f"it has no {name}{PARAMFILE_EXT}", states
            try:
                if self._loads_with_torch(name, obj):
                    states[name] = torch_patched_state_dict_load(path)
                elif os.path.getsize(path) == 0:
                    return f"{path.name} is empty", states
            except Exception as error:  # noqa: BLE001 (a damaged file fails in many ways)
                return (
                    f"{path.name} cannot be read ({type(error).__name__}: {error})",
                    states,
                )
        return None, states

    def _may_lack(self, name):
        """Whether SpeechBrain loads a checkpoint that has no file for ``name``."""
        return (
            self.allow_partial_load
            or "dataloader" in name
            or self.optional_recoverables.get(name, False)
        )

    def _loads_with_torch(self, name, obj):
        """Whether the recoverable is loaded by SpeechBrain's ``torch_recovery``."""
        return (
            name not in self.custom_load_hooks
            and get_default_hook(obj, DEFAULT_LOAD_HOOKS) is torch_recovery
        )

    def _find_mismatch(self, checkpoint, states):
        """Why the states read from a checkpoint do not fit the recoverables:
        the keys and shapes of a module, the parameter groups of an optimiser.

        Returns
        -------
        str or None
            The first recoverable that does not fit, and how; None if all fit.
        """
        for name, state in states.items():
            obj = self.recoverables[name]
            path = checkpoint.paramfiles[name]
            if isinstance(obj, torch.nn.Module):
                mismatch = describe_mismatch(
                    path.name,
                    f"the {name} of this run",
                    *compare_state_dicts(obj.state_dict(), state),
                )
                if mismatch is not None:
                    return mismatch
            elif isinstance(obj, torch.optim.Optimizer):
                expected = _parameter_group_sizes(obj.state_dict())
                found = _parameter_group_sizes(state)
                if found != expected:
                    return (
                        f"{path.name} has parameter groups of {found} parameters, "
                        f"the {name} of this run {expected}"
                    )
        return None


def _parameter_group_sizes(optimizer_state):
    """The number of parameters in each group of an optimiser's state_dict."""
    return [len(group["params"]) for group in optimizer_state["param_groups"]]
