"""Checks that the recipes run before any work: values of the yaml and the
command line, the csv files to read, and one run per output folder.

HyperPyYAML takes a command-line value as yaml, so ``--skip_bad_files no``
gives the string "no" (true in Python), ``--train_splits train-clean-100`` a
string that would be read letter by letter as split names, and a wrong number
fails only at the first training step. These checks refuse them first.

Authors
* speechbrain-pom contributors 2026
"""

import contextlib
import csv
import errno
import fcntl
import logging
import os
import sys

from speechbrain.utils.distributed import ddp_broadcast, if_main_process, run_on_main

from speechbrain_pom.dataio.validation import (
    check_audio_files,
    group_by_reason,
    list_some,
)
from speechbrain_pom.utils.checkpoints import CheckpointMismatchError
from speechbrain_pom.utils.parameter_transfer import PretrainedMismatchError

logger = logging.getLogger(__name__)

LOCK_FILE = ".recipe.lock"
# flock's errors on file systems mounted without locks (Lustre's noflock, NFS
# without a lock daemon): the folder cannot be locked, the run goes on.
LOCKS_UNSUPPORTED = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)
# The exit code of a run that refuses to start or to go on (as a command
# line refused by argparse, and as transcribe's model that does not fit).
REFUSAL_EXIT_CODE = 2


class RecipeValueError(ValueError):
    """A value of the yaml or of the command line that the recipe refuses."""


# What stops a recipe with one line instead of a traceback: the user's values
# or files, not a bug.
REFUSALS = (RecipeValueError, CheckpointMismatchError, PretrainedMismatchError)


@contextlib.contextmanager
def exit_on_refusal():
    """Turns a refusal into one ``error:`` line on stderr and exit code 2.

    Example
    -------
    >>> with exit_on_refusal():
    ...     raise RecipeValueError("skip_prep is 'no': give True or False")
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    try:
        yield
    except REFUSALS as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(REFUSAL_EXIT_CODE) from None


def check_recipe_values(
    flags=None, lists=None, non_negative_numbers=None, non_negative_integers=None
):
    """Refuses, in one message, every value of the wrong type.

    Arguments
    ---------
    flags : dict, optional
        ``{name: value}`` that must be booleans (True or False).
    lists : dict, optional
        ``{name: value}`` that must be lists.
    non_negative_numbers : dict, optional
        ``{name: value}`` that must be numbers >= 0.
    non_negative_integers : dict, optional
        ``{name: value}`` that must be integers >= 0.

    Raises
    ------
    RecipeValueError
        Naming each wrong value and what it should be.

    Example
    -------
    >>> check_recipe_values(flags={"skip_prep": False}, lists={"splits": ["a"]})
    >>> check_recipe_values(flags={"skip_bad_files": "no"})
    Traceback (most recent call last):
    ...
    speechbrain_pom.utils.recipe_checks.RecipeValueError: skip_bad_files is 'no': ...
    """
    problems = []
    for name, value in (flags or {}).items():
        if not isinstance(value, bool):
            problems.append(f"{name} is {value!r}: give True or False")
    for name, value in (lists or {}).items():
        if not isinstance(value, list):
            problems.append(
                f"{name} is {value!r}: give a list, such as [{value}] "
                "(quoted on the command line)"
            )
    for name, value in (non_negative_numbers or {}).items():
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or value < 0:
            problems.append(f"{name} is {value!r}: give a number >= 0")
    for name, value in (non_negative_integers or {}).items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{name} is {value!r}: give a whole number >= 0")
    if problems:
        raise RecipeValueError("; ".join(problems))


# Mixers that cannot train with Dynamic Chunk Training or stream: SpeechBrain's
# HyperMixing ignores attention masks.
MIXERS_WITHOUT_STREAMING = ("hypermixing",)


def check_can_stream(streaming, mixer):
    """Refuses ``streaming: True`` with a mixer that cannot chunk, before any
    work (the encoder itself would refuse only at the first batch).

    Arguments
    ---------
    streaming : bool
        The recipe's ``streaming`` flag.
    mixer : str
        The recipe's token mixer.

    Raises
    ------
    RecipeValueError
        If the mixer cannot stream.

    Example
    -------
    >>> check_can_stream(True, "pom")
    >>> check_can_stream(True, "hypermixing")
    Traceback (most recent call last):
    ...
    speechbrain_pom.utils.recipe_checks.RecipeValueError: streaming is True but ...
    """
    if streaming and mixer in MIXERS_WITHOUT_STREAMING:
        raise RecipeValueError(
            f"streaming is True but mixer {mixer!r} cannot train with chunks or "
            "stream (SpeechBrain's HyperMixing ignores attention masks); use "
            "pom, summarymixing, RelPosMHAXL or RoPEMHA, or streaming: False"
        )


def check_csv_files(csv_files):
    """Refuses csv files that do not exist, before any training.

    Arguments
    ---------
    csv_files : dict
        ``{name: path}``, such as ``{"train_csv": ...}``.

    Raises
    ------
    RecipeValueError
        Naming each missing file and the key that gives it.
    """
    missing = [
        f"{name} {path}" for name, path in csv_files.items() if not os.path.isfile(path)
    ]
    if missing:
        raise RecipeValueError(
            "no such csv file: " + "; ".join(missing) + " (prepare the data "
            "with skip_prep False, or give existing files)"
        )


def audio_problems(csv_files, data_folder, cache_file):
    """Decodes the audio of csv files (once: the results are cached) and
    tells which rows cannot be used, as the data preparations do.

    Arguments
    ---------
    csv_files : dict
        ``{name: path}`` of SpeechBrain csv files (``ID`` and ``wav``
        columns, ``$data_root`` standing for ``data_folder``).
    data_folder : str
        The value of ``$data_root``.
    cache_file : str
        The decode cache (``validation.AUDIO_CACHE_NAME``), shared with the
        preparation, so prepared files are not decoded again.

    Returns
    -------
    list of tuple
        ``(reason, "<csv name>: <ID>")`` per row that cannot be used.
    """
    rows = []
    for name, path in csv_files.items():
        with open(path, newline="", encoding="utf-8") as stream:
            for row in csv.DictReader(stream):
                wav = row["wav"].replace("$data_root", str(data_folder))
                rows.append((f"{name}: {row['ID']}", wav))
    results = check_audio_files([wav for _, wav in rows], cache_file=cache_file)
    return [
        (problem, where)
        for (where, _), (_, problem) in zip(rows, results, strict=True)
        if problem is not None
    ]


def check_csv_audio(csv_files, data_folder, cache_file):
    """Refuses csv files with audio that cannot be used (unreadable,
    truncated, empty, not mono, NaN or inf samples), before any training:
    files given with ``skip_prep`` or on the command line are checked as
    the prepared ones are. Under DDP the main process decodes, then every
    process reads the cache and refuses alike.

    Arguments
    ---------
    csv_files : dict
        ``{name: path}``, as ``audio_problems``.
    data_folder : str
        The value of ``$data_root``.
    cache_file : str
        The decode cache.

    Raises
    ------
    RecipeValueError
        Naming the rows and their problems.
    """
    run_on_main(audio_problems, args=[csv_files, data_folder, cache_file])
    problems = audio_problems(csv_files, data_folder, cache_file)
    if problems:
        by_reason = group_by_reason(problems)
        raise RecipeValueError(
            f"{len(problems)} row(s) of the csv files have audio that cannot be "
            "used (remove them or fix the files): "
            + "; ".join(
                f"{reason}: {list_some(rows)}" for reason, rows in by_reason.items()
            )
        )


class OutputFolderLock:
    """An exclusive lock on an output folder, held while the process runs.

    The lock is an ``flock`` on ``<folder>/.recipe.lock``: the kernel drops it
    when the process ends, however it ends (kill -9 included), so a killed run
    never leaves the folder locked. Under DDP the main process locks, and
    every rank refuses when it cannot. On a file system without locks the
    folder is left unlocked, with a warning.

    Arguments
    ---------
    folder : str
        The output folder (created if needed).

    Raises
    ------
    RecipeValueError
        If another process holds the lock; the message names the folder and
        that process.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> lock = OutputFolderLock(folder)
    >>> lock.release()
    >>> OutputFolderLock(folder).release()  # free again
    """

    def __init__(self, folder):
        self.file = None
        refusal = self._lock(folder) if if_main_process() else None
        # Every rank stops on the main rank's refusal: a rank that went on
        # would wait forever for the others at SpeechBrain's next barrier.
        refusal = ddp_broadcast(refusal)
        if refusal is not None:
            raise RecipeValueError(refusal)

    def _lock(self, folder):
        """Takes the lock; returns why it cannot be taken, or None."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, LOCK_FILE)
        lock_file = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in LOCKS_UNSUPPORTED:
                logger.warning(
                    f"Cannot lock the output folder {os.path.abspath(folder)}: its "
                    f"file system has no locks ({error.strerror}); make sure that "
                    "no other run writes there."
                )
                lock_file.close()
                return None
            if not isinstance(error, BlockingIOError):
                raise
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            return (
                f"{os.path.abspath(folder)} is the output folder of a run that "
                f"is still going (process {holder}); wait for it to end or "
                "choose another --output_folder"
            )
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self.file = lock_file
        return None

    def release(self):
        """Releases the lock (also released when the process ends)."""
        if self.file is not None:
            self.file.close()
            self.file = None
