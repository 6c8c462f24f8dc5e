"""Running the recipes as a user would, for the demo and the mixer comparison.

The small CPU setting of the recipes (a 4 x 144 Conformer, the learning rates
that scale needs) is a set of command-line overrides of the faithful
(SpeechBrain's) recipes, kept with their reasons in ``hparams/small_scale.yaml``
and exposed here; helpers run a recipe script as a subprocess and read what it
wrote.

Authors
* speechbrain-pom contributors 2026
"""

import os
import re
import subprocess
import sys
import time

from ruamel.yaml import YAML

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESTRQ_DIR = os.path.join(REPO, "recipes/LibriSpeech/self-supervised-learning/BEST-RQ")
CTC_DIR = os.path.join(REPO, "recipes/LibriSpeech/ASR/CTC")
BESTRQ_SCRIPT = ("train.py", "hparams/bestrq_pom.yaml")
CTC_SCRIPT = ("train_with_bestrq.py", "hparams/ctc_bestrq_pom.yaml")
SMALL_SCALE_FILE = os.path.join(REPO, "hparams", "small_scale.yaml")

# What the recipes write (file names of SpeechBrain's recipes).
BESTRQ_EPOCH_LOG = "train_stage_log.txt"
CTC_EPOCH_LOG = "train_log.txt"
# The CTC recipe's switches: only the head trains (a frozen probe), and the
# head reads a learned weighted sum of every encoder layer's output.
FROZEN_ENCODER_KEY = "freeze_bestrq"
WEIGHTED_LAYERS_KEY = "weighted_layers"
# The recoverables of a CTC checkpoint that hold the learned parameters.
CTC_MODEL_RECOVERABLES = ("pt_model", "model")


def load_small_scale(path=SMALL_SCALE_FILE):
    """The override sections of ``hparams/small_scale.yaml``.

    Arguments
    ---------
    path : str
        The yaml file.

    Returns
    -------
    dict
        ``{recipe: {section: {key: value}}}``, recipe ``bestrq`` or ``ctc``.

    Example
    -------
    >>> load_small_scale()["bestrq"]["pretraining"]["d_model"]
    144
    """
    # ruamel.yaml, which HyperPyYAML depends on, in its plain (safe) mode.
    with open(path, encoding="utf-8") as stream:
        return YAML(typ="safe", pure=True).load(stream)


_SMALL_SCALE = load_small_scale()
# BEST-RQ pre-training of the small model.
SMALL_PRETRAINING = _SMALL_SCALE["bestrq"]["pretraining"]
# CTC fine-tuning of the small model, pre-trained or not (add the rates below).
SMALL_FINETUNING = _SMALL_SCALE["ctc"]["finetuning"]
# The learning rates of fine-tuning a pre-trained encoder (and of the probes),
# and of training from scratch.
PRETRAINED_FINETUNING = _SMALL_SCALE["ctc"]["pretrained"]
SCRATCH_FINETUNING = _SMALL_SCALE["ctc"]["scratch"]
# The frozen probes' schedule, on top of PRETRAINED_FINETUNING.
PROBE_FINETUNING = _SMALL_SCALE["ctc"]["probe"]
# The tests' tiny model, on top of the settings above.
QUICK_PRETRAINING = _SMALL_SCALE["bestrq"]["quick"]
QUICK_FINETUNING = _SMALL_SCALE["ctc"]["quick"]

# glibc keeps large freed blocks instead of mapping them again at every step
# (1.47x faster steps on this project's 2-core machine). Settings already in
# the environment win.
RECIPE_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
    **os.environ,
}


def yaml_value(value):
    """A value as the recipes' command line takes it (YAML flow style).

    Example
    -------
    >>> yaml_value({"num_workers": 0})
    '{num_workers: 0}'
    >>> yaml_value(["dev-clean"])
    '[dev-clean]'
    """
    if isinstance(value, dict):
        items = ", ".join(f"{key}: {yaml_value(item)}" for key, item in value.items())
        return "{" + items + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    return str(value)


def as_arguments(overrides):
    """``{"key": value}`` -> ["--key", "value", ...] for SpeechBrain's parser.

    Example
    -------
    >>> as_arguments({"d_model": 144, "augment": False})
    ['--d_model', '144', '--augment', 'False']
    """
    return [
        item
        for key, value in overrides.items()
        for item in (f"--{key}", yaml_value(value))
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
        overrides["mixer_options"] = yaml_value({mixer: options})
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
