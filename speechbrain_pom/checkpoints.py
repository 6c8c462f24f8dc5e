"""Checkpoints that survive a crash, for SpeechBrain's ``Checkpointer``.

SpeechBrain 1.1.2 creates the final ``CKPT+...`` folder, writes ``CKPT.yaml``
and then each file in place, and recovery takes the newest folder. A run
killed during a save (kill -9, out of memory, a full disk) leaves a folder
that every later run picks and fails on. ``SafeCheckpointer`` writes each
checkpoint into a hidden staging folder and renames it into place only when
every file is written (a rename within a folder is atomic), and its recovery
skips a checkpoint that cannot be loaded, with a warning that names it, and
falls back to the next one in the usual order. SpeechBrain is not modified.

Authors
* speechbrain-pom contributors 2026
"""

import logging
import os
import shutil

import yaml
from speechbrain.utils.checkpoints import Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

# Checkpoints being written; not a CKPT+ name, so SpeechBrain never lists them.
STAGING_PREFIX = ".staging-"


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
            self._remove_stale_staging()
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
        if final.exists():  # a named checkpoint saved again
            shutil.rmtree(final)
        os.rename(staged.path, final)
        _fsync(final.parent, directory=True)
        logger.log(verbosity, f"Saved a checkpoint in {final}")
        return Checkpoint(
            final,
            staged.meta,
            {key: final / path.name for key, path in staged.paramfiles.items()},
        )

    def _remove_stale_staging(self):
        """Removes what a save that was killed left behind."""
        for path in self.checkpoints_dir.glob(f"{STAGING_PREFIX}*"):
            logger.warning(f"Removing an unfinished checkpoint: {path}")
            shutil.rmtree(path, ignore_errors=True)

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
        """Loads the best checkpoint that can be loaded.

        Candidates are taken in SpeechBrain's order (newest, or by
        ``importance_key`` / ``max_key`` / ``min_key``); one that fails to load
        (a missing or truncated file) is skipped with a warning that names it.

        Returns
        -------
        Checkpoint or None
            The checkpoint loaded, or None if none could be.
        """
        candidates = self.find_checkpoints(
            importance_key, max_key, min_key, ckpt_predicate
        )
        for checkpoint in candidates:
            try:
                self.load_checkpoint(checkpoint)
            except Exception as error:  # noqa: BLE001 (any loader's error)
                logger.warning(
                    f"Skipping checkpoint {checkpoint.path}: it cannot be loaded "
                    f"({type(error).__name__}: {error}); trying an older one."
                )
                continue
            return checkpoint
        if candidates:
            logger.warning(
                f"None of the {len(candidates)} checkpoints in "
                f"{self.checkpoints_dir} could be loaded; starting afresh."
            )
        else:
            logger.info("Would load a checkpoint here, but none found yet.")
        return None
