"""Running the recipes as a user would, for the demo and the mixer comparison.

The small CPU setting of the recipes (a 4 x 144 Conformer), the settings under
which BEST-RQ pre-training pays off on the generated low-resource corpus, and
helpers that run a recipe script as a subprocess and read what it wrote.

Authors
* speechbrain-pom contributors 2026
"""

import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESTRQ_DIR = os.path.join(REPO, "recipes/LibriSpeech/self-supervised-learning/BEST-RQ")
CTC_DIR = os.path.join(REPO, "recipes/LibriSpeech/ASR/CTC")
BESTRQ_SCRIPT = ("train.py", "hparams/bestrq_pom.yaml")
CTC_SCRIPT = ("train_with_bestrq.py", "hparams/ctc_bestrq_pom.yaml")

# The small-model setting of the recipes: a 4-layer, 144-wide Conformer, fp32,
# batches of at most 50 s of audio.
SMALL_ENCODER = {
    "d_model": 144,
    "nhead": 4,
    "num_encoder_layers": 4,
    "d_ffn": 576,
    "kernel_size": 15,
    "precision": "fp32",
    "num_workers": 0,
    "max_batch_length": 50,
    "num_buckets": 10,
}
# BEST-RQ pre-training of the small model; steps are set by the caller.
SMALL_PRETRAINING = {
    "cb_vocab": 1024,
    "lr": 0.001,
    "n_warmup_steps": 100,
    "ckpt_interval_minutes": 0,
    "number_of_epochs": 100000,
}
# CTC fine-tuning of the small model on clean synthetic speech (no
# augmentation), tested on test-clean with a small beam.
SMALL_FINETUNING = {
    "lr_encoder": 0.0008,
    "lr_head": 0.001,
    "augment": False,
    "number_of_epochs": 100000,
    "dev_splits": "[dev-clean]",
    "test_splits": "[test-clean]",
    "test_csv": "[!ref <save_folder>/test-clean.csv]",
    "test_beam_size": 10,
}
# A pre-trained encoder is fine-tuned at higher learning rates than a random
# one can take: on 5 minutes of labels these rates gave the pre-trained model
# its best test CER, while training from scratch diverged at them (its best
# are SMALL_FINETUNING's); see benchmarks/results/compare-h100/README.md.
PRETRAINED_FINETUNING = {"lr_encoder": 0.002, "lr_head": 0.002}

# glibc keeps large freed blocks instead of mapping them again at every step
# (1.47x faster steps on this project's 2-core machine). Settings already in
# the environment win.
RECIPE_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
    **os.environ,
}


def as_arguments(overrides):
    """``{"key": value}`` -> ["--key", "value", ...] for SpeechBrain's parser.

    Example
    -------
    >>> as_arguments({"d_model": 144, "augment": False})
    ['--d_model', '144', '--augment', 'False']
    """
    return [
        item for key, value in overrides.items() for item in (f"--{key}", str(value))
    ]


def mixer_overrides(mixer, options=None):
    """Command-line overrides that choose a mixer and its options.

    Example
    -------
    >>> mixer_overrides("pom", {"degree": 2, "expand": 1})
    {'mixer': 'pom', 'mixer_options': '{pom: {degree: 2, expand: 1}}'}
    """
    overrides = {"mixer": mixer}
    if options:
        inner = ", ".join(f"{key}: {value}" for key, value in options.items())
        overrides["mixer_options"] = "{" + mixer + ": {" + inner + "}}"
    return overrides


def run_recipe(
    folder, script, hparams, overrides, log_path, environment=None, progress=False
):
    """Runs a recipe script from its folder, its output appended to a log.

    Arguments
    ---------
    folder : str
        The recipe folder (the script's working directory).
    script, hparams : str
        The script and its yaml, relative to ``folder``.
    overrides : dict
        Command-line overrides (``--key value``).
    log_path : str
        File that receives the script's output.
    environment : dict, optional
        The environment of the process (default: ``RECIPE_ENVIRONMENT``).
    progress : bool
        Whether the script's progress bars (its stderr) go to the console
        instead of the log.

    Returns
    -------
    minutes : float
        Wall-clock minutes of the process.
    peak_mib : float
        Its peak resident memory.

    Raises
    ------
    RuntimeError
        If the script fails; the message names its log.
    """
    command = [sys.executable, script, hparams, *as_arguments(overrides)]
    print(
        "$ cd " + os.path.relpath(folder) + " && " + " ".join(command[1:]), flush=True
    )
    start = time.time()
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env=environment or RECIPE_ENVIRONMENT,
            stdout=log,
            stderr=sys.stderr if progress else subprocess.STDOUT,
        )
        # wait4 gives this child's own peak memory, even beside other children.
        _, status, usage = os.wait4(process.pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        raise RuntimeError(f"{script} failed ({returncode}); its log: {log_path}")
    return (time.time() - start) / 60.0, usage.ru_maxrss / 1024.0


def error_rate(path):
    """The %WER (or %CER) figure of a SpeechBrain ErrorRateStats file."""
    with open(path) as stats:
        match = re.search(r"%(?:WER|CER) ([\d.]+)", stats.read())
    if match is None:
        raise ValueError(f"No error rate found in {path}")
    return float(match.group(1))


def last_epoch_stats(train_log):
    """The last epoch line of a SpeechBrain ``FileTrainLogger`` file.

    Returns
    -------
    dict
        ``{"epoch": "3", "steps": "36", "valid CER": "41.2", ...}`` (strings).
    """
    with open(train_log) as stream:
        lines = [line for line in stream if line.startswith("epoch")]
    if not lines:
        raise ValueError(f"No epoch line in {train_log}")
    stats = {}
    for section in lines[-1].strip().split(" - "):
        for item in section.split(", "):
            key, _, value = item.rpartition(": ")
            stats[key] = value
    return stats
