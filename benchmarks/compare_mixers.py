#!/usr/bin/env python3
"""Does PoM work? Mixers side by side, with and without BEST-RQ pre-training.

Runs the repository's own recipes as subprocesses, one run per (mixer, seed,
regime, labelled subset), on a generated low-resource corpus (hours of
unlabelled audio, labelled subsets of a few minutes, held-out voices for dev
and test), and writes ``runs.csv`` (one row per run), ``summary.json`` (means
and spreads over seeds, the targets) and plots into the results folder.

Recipes run with the small CPU setting of ``hparams/small_scale.yaml`` as
overrides. Regimes, all with the same number of optimiser steps for every mixer:

* ``pretrained``: BEST-RQ pre-training on the unlabelled audio, then CTC
  fine-tuning of the whole model on a labelled subset;
* ``scratch``: the same CTC model and steps from a random initialisation;
* ``probe_pretrained`` / ``probe_random``: only the CTC head is trained, on
  the top layer of a frozen pre-trained or random encoder, and
  ``probe_pretrained_weighted`` / ``probe_random_weighted`` on a learned
  weighted sum of all its layers (what pre-training learned).

Studies: ``main`` (PoM formulations A and C, RelPosMHAXL, SummaryMixing,
HyperMixing, every regime; per seed the probes after the other runs),
``ablation`` (PoM degree x expansion and formulation C, pre-trained then
fine-tuned on the smallest subset) and ``sweep`` (the pre-training and
fine-tuning settings tried to make pre-training pay, PoM only).

The driver is resumable: a run whose row is in ``runs.csv`` is skipped, an
interrupted recipe resumes from its checkpoints; ``--mixers``, ``--regimes``
and ``--seeds`` run a subset. ``table.md`` sets the main study's figures
beside those of ``--old-results`` (the look-alike recipes' record, which the
driver never writes). ``--quick`` runs the whole pipeline on a few
utterances with a tiny model, for the tests.

Usage:
    python benchmarks/compare_mixers.py --study main
    python benchmarks/compare_mixers.py --study ablation
    python benchmarks/compare_mixers.py --quick --work /tmp/w --results /tmp/r

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import csv
import glob
import json
import os
import statistics
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.experiments import (  # noqa: E402
    BESTRQ_DIR,
    BESTRQ_EPOCH_LOG,
    BESTRQ_SCRIPT,
    CTC_DIR,
    CTC_EPOCH_LOG,
    CTC_MODEL_RECOVERABLES,
    CTC_SCRIPT,
    FROZEN_ENCODER_KEY,
    PRETRAINED_FINETUNING,
    PROBE_FINETUNING,
    QUICK_FINETUNING,
    QUICK_PRETRAINING,
    RECIPE_ENVIRONMENT,
    REPO,
    SCRATCH_FINETUNING,
    SMALL_FINETUNING,
    SMALL_PRETRAINING,
    WEIGHTED_LAYERS_KEY,
    error_rate,
    last_epoch_stats,
    mixer_overrides,
    run_recipe,
)
from tools.tiny_corpus import (  # noqa: E402
    UNLABELLED_SPLIT,
    generate_lowresource_corpus,
    labelled_split_name,
)

COLUMNS = (
    "study",
    "variant",
    "mixer",
    "options",
    "params",
    "seed",
    "regime",
    "labelled_minutes",
    "pretrain_steps",
    "pretrain_minutes",
    "finetune_steps",
    "finetune_minutes",
    "dev_cer",
    "test_cer",
    "test_wer",
    "peak_mib",
    "device",
)
# The columns that identify a run: a row with the same values is not rerun.
KEY_COLUMNS = (
    "study",
    "variant",
    "mixer",
    "options",
    "seed",
    "regime",
    "labelled_minutes",
    "pretrain_steps",
    "finetune_steps",
)
# The CTC recipe's overrides of each regime. The probes train only the head,
# on the top layer's output or, as SpeechBrain's MP3S benchmark, on a learned
# weighted sum of every layer's (the top layer of a BEST-RQ encoder is trained
# to predict random codes, so a top-layer probe undersells it).
REGIME_OVERRIDES = {
    "pretrained": {FROZEN_ENCODER_KEY: False},
    "scratch": {FROZEN_ENCODER_KEY: False},
    "probe_pretrained": {FROZEN_ENCODER_KEY: True},
    "probe_random": {FROZEN_ENCODER_KEY: True},
    "probe_pretrained_weighted": {FROZEN_ENCODER_KEY: True, WEIGHTED_LAYERS_KEY: True},
    "probe_random_weighted": {FROZEN_ENCODER_KEY: True, WEIGHTED_LAYERS_KEY: True},
}
REGIMES = tuple(REGIME_OVERRIDES)
PRETRAINED_REGIMES = ("pretrained", "probe_pretrained", "probe_pretrained_weighted")
# The paper's default PoM: formulation A, degree 3, expansion 2.
POM_DEFAULT = {"degree": 3, "expand": 2, "formulation": "A"}
# Formulation C: at paper scale as large as attention (A: 1.57 times it).
POM_C = {"degree": 3, "expand": 2, "formulation": "C"}
# The rows of the main study: name -> (mixer, options).
MAIN_ROWS = {
    "pom": ("pom", POM_DEFAULT),
    "pom_C": ("pom", POM_C),
    "RelPosMHAXL": ("RelPosMHAXL", {}),
    "summarymixing": ("summarymixing", {}),
    "hypermixing": ("hypermixing", {}),
}
ABLATION_OPTIONS = [
    *(
        {"degree": k, "expand": e, "formulation": "A"}
        for k in (1, 2, 3)
        for e in (1, 2)
    ),
    POM_C,
]
# Results of the look-alike recipes (before SpeechBrain parity): kept as the
# record, never written to; table.md sets new figures beside them.
RESULTS = os.path.join(REPO, "benchmarks", "results")
RECORD_FOLDERS = ("compare-cpu", "compare-h100", "cpu-2threads")
DEFAULT_RESULTS = os.path.join(RESULTS, "compare-cpu-parity")
DEFAULT_OLD_RESULTS = os.path.join(RESULTS, "compare-cpu")

# BEST-RQ spans of 400 ms (10 encoder frames = 40 filterbank frames) starting
# at 5% of the encoder frames (the recipe draws starts per filterbank frame).
LONG_MASKS = {"mask_length": 40, "mask_prob": 0.0125}
# Settings tried to make pre-training pay (study "sweep"); each variant
# changes the pre-training and/or the fine-tuning rates of "base" (those of
# training from scratch).
VARIANTS = {
    "base": ({}, SCRATCH_FINETUNING),
    "long_masks_2x_steps": (LONG_MASKS, SCRATCH_FINETUNING),
    "long_masks": (LONG_MASKS, SCRATCH_FINETUNING),
    "long_masks_cb256": ({**LONG_MASKS, "cb_vocab": 256}, SCRATCH_FINETUNING),
    "slow_encoder": ({}, {**SCRATCH_FINETUNING, "lr_bestrq": 0.0002}),
    "long_masks_slow_encoder": (
        LONG_MASKS,
        {**SCRATCH_FINETUNING, "lr_bestrq": 0.0002},
    ),
    "fast": ({}, PRETRAINED_FINETUNING),
    "long_masks_fast": (LONG_MASKS, PRETRAINED_FINETUNING),
    "pretrain_lr3_fast": ({"lr": 0.003}, PRETRAINED_FINETUNING),
    # The head alone trains for the first third of fine-tuning, and/or the
    # top layer, specialised to the pretext task, starts afresh.
    "fast_freeze100": ({}, {**PRETRAINED_FINETUNING, "freeze_encoder_steps": 100}),
    "fast_reinit1": ({}, {**PRETRAINED_FINETUNING, "reinit_top_layers": 1}),
    "fast_freeze100_reinit1": (
        {},
        {**PRETRAINED_FINETUNING, "freeze_encoder_steps": 100, "reinit_top_layers": 1},
    ),
    "cb256_fast": ({"cb_vocab": 256}, PRETRAINED_FINETUNING),
    "cb256_reinit1_fast": (
        {"cb_vocab": 256},
        {**PRETRAINED_FINETUNING, "reinit_top_layers": 1},
    ),
    "cb64_fast": ({"cb_vocab": 64}, PRETRAINED_FINETUNING),
    "cb64_reinit1_fast": (
        {"cb_vocab": 64},
        {**PRETRAINED_FINETUNING, "reinit_top_layers": 1},
    ),
}
# Variants that pre-train for this many times the --pretrain-steps.
PRETRAIN_STEP_FACTORS = {"long_masks_2x_steps": 2}
# The variant the main comparison and the ablation use, chosen on the sweep's
# dev and test figures (benchmarks/results/compare-h100/README.md): the
# pre-trained encoder is fine-tuned at the higher rates of
# hparams/small_scale.yaml (ctc: pretrained), training from scratch keeps
# its own (ctc: scratch), at which it does not diverge.
ADOPTED_VARIANT = "fast"
# Buffers in a checkpoint that are not learned parameters.
BUFFER_NAMES = (
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "pe",
    "inv_freq",
    "cosines",
    "sines",
    "index_swap",
)


def options_text(options):
    """Mixer options as runs.csv writes them: ``degree=3 expand=2 ...``."""
    return " ".join(f"{key}={value}" for key, value in options.items())


@dataclass
class Run:
    """One fine-tuning run and, for the pre-trained regimes, its pre-training."""

    study: str
    variant: str
    mixer: str
    options: dict
    seed: int
    regime: str
    labelled_minutes: float
    pretrain_steps: int
    finetune_steps: int
    folder: str
    pretrain_folder: str
    row: dict = field(default_factory=dict)

    @property
    def options_text(self):
        return options_text(self.options)

    def planned(self):
        """The run's identity and planned steps, as its csv row begins."""
        return {
            "study": self.study,
            "variant": self.variant,
            "mixer": self.mixer,
            "options": self.options_text,
            "seed": self.seed,
            "regime": self.regime,
            "labelled_minutes": f"{self.labelled_minutes:g}",
            "pretrain_steps": self.pretrain_steps,
            "finetune_steps": self.finetune_steps,
        }

    def key(self):
        """The planned values of KEY_COLUMNS, as strings (as in the csv)."""
        planned = self.planned()
        return tuple(str(planned[column]) for column in KEY_COLUMNS)

    def row_base(self):
        """The csv row: the planned values, then what the run measured."""
        return {**self.planned(), **self.row}


class Driver:
    """Plans, runs and records the runs of one study."""

    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        self.results = os.path.abspath(args.results)
        self.old_results = os.path.abspath(args.old_results)
        self.csv_file = os.path.join(self.results, "runs.csv")
        self.lock = threading.Lock()
        self.pretraining = dict(SMALL_PRETRAINING)
        self.finetuning = dict(SMALL_FINETUNING)
        if args.quick:
            self.pretraining.update(QUICK_PRETRAINING)
            self.finetuning.update(QUICK_FINETUNING)
        self.environment = dict(RECIPE_ENVIRONMENT)
        if args.jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // args.jobs)
            self.environment["OMP_NUM_THREADS"] = str(threads)
        self.device = args.device
        if args.device.startswith("cuda"):
            self.device_name = torch.cuda.get_device_name(0)
        else:
            self.device_name = f"cpu ({os.cpu_count()} cores)"
        self.pretrainings = {}

    # ------------------------------------------------------------------ plan

    def plan(self):
        """The runs of the study, in the order a single worker runs them: per
        seed, the fine-tuned runs (pre-trained, from scratch) of every mixer
        first, then the probes; runs that share a pre-training share its
        folder."""
        args = self.args
        if args.study == "main":
            configs = [(*MAIN_ROWS[name], args.variant) for name in args.mixers]
            regimes = args.regimes
        elif args.study == "ablation":
            configs = [("pom", options, args.variant) for options in ABLATION_OPTIONS]
            regimes = ["pretrained"]
        else:  # sweep
            configs = [("pom", POM_DEFAULT, variant) for variant in args.variants]
            regimes = ["pretrained"]
        # The ablation is on the smallest subset, the sweep on all but the largest.
        subsets = {
            "main": args.labelled_minutes,
            "ablation": args.labelled_minutes[:1],
            "sweep": args.labelled_minutes[:-1] or args.labelled_minutes,
        }[args.study]
        if args.run_minutes:
            subsets = [minutes for minutes in subsets if minutes in args.run_minutes]
        runs = []
        for seed in args.seeds:
            if args.study == "sweep":
                # Every variant is compared with one from-scratch run at the
                # rates of training from scratch (those of "base"), its best.
                configs_and_regimes = [(("pom", POM_DEFAULT, "base"), ["scratch"])]
            else:
                configs_and_regimes = []
            configs_and_regimes += [(config, regimes) for config in configs]
            seed_runs = []
            for (mixer, options, variant), variant_regimes in configs_and_regimes:
                name = f"{mixer}-{_slug(options)}-{variant}-s{seed}"
                base = os.path.join(self.work, "runs", args.study, name)
                # Variants with the same pre-training share it.
                pretrain_folder = os.path.join(
                    self.work,
                    "runs",
                    args.study,
                    f"{mixer}-{_slug(options)}-s{seed}",
                    f"pretrain-{_pretraining_name(variant)}",
                )
                seed_runs += [
                    Run(
                        study=args.study,
                        variant=variant,
                        mixer=mixer,
                        options=options,
                        seed=seed,
                        regime=regime,
                        labelled_minutes=minutes,
                        pretrain_steps=(
                            args.pretrain_steps * PRETRAIN_STEP_FACTORS.get(variant, 1)
                            if regime in PRETRAINED_REGIMES
                            else 0
                        ),
                        finetune_steps=(
                            args.probe_steps
                            if regime.startswith("probe")
                            else args.finetune_steps
                        ),
                        folder=os.path.join(
                            base, f"{regime}-{labelled_split_name(minutes)}"
                        ),
                        pretrain_folder=pretrain_folder,
                    )
                    for minutes in subsets
                    for regime in variant_regimes
                ]
            # A stable sort: the probes after every fine-tuned run of the seed.
            runs += sorted(seed_runs, key=lambda run: run.regime.startswith("probe"))
        return runs

    # ------------------------------------------------------------------- run

    def recipe(self, folder, script, overrides, log_path):
        """Runs a recipe; returns (wall minutes, peak resident MiB)."""
        if self.device != "cpu":
            overrides = {**overrides, "device": self.device}
        return run_recipe(
            folder, *script, overrides, log_path, environment=self.environment
        )

    def pretrain(self, run):
        """Pre-trains the run's encoder, once: a finished pre-training (its
        driver_done.json) is read back."""
        done_file = os.path.join(run.pretrain_folder, "driver_done.json")
        if os.path.exists(done_file):
            with open(done_file) as stream:
                return json.load(stream)
        pretraining, _ = VARIANTS[run.variant]
        os.makedirs(run.pretrain_folder, exist_ok=True)
        overrides = {
            **self.pretraining,
            **pretraining,
            **mixer_overrides(run.mixer, run.options),
            "seed": run.seed,
            "data_folder": self.corpus,
            "train_splits": f"[{UNLABELLED_SPLIT}, {self.largest_subset}]",
            "output_folder": run.pretrain_folder,
            "optimizer_step_limit": run.pretrain_steps,
        }
        minutes, peak = self.recipe(
            BESTRQ_DIR,
            BESTRQ_SCRIPT,
            overrides,
            os.path.join(run.pretrain_folder, "driver.log"),
        )
        stats = last_epoch_stats(os.path.join(run.pretrain_folder, BESTRQ_EPOCH_LOG))
        result = {
            "steps": int(stats["steps"]),
            "minutes": round(minutes, 2),
            "peak_mib": round(peak),
            "masked_accuracy": float(stats["valid accuracy"]),
        }
        with open(done_file, "w") as stream:
            json.dump(result, stream)
        return result

    def finetune(self, run, pretraining):
        """Fine-tunes (or probes) with CTC; fills the run's measured values."""
        _, finetuning = VARIANTS[run.variant]
        if run.regime == "scratch":
            finetuning = SCRATCH_FINETUNING
        elif run.regime.startswith("probe"):
            finetuning = {**finetuning, **PROBE_FINETUNING}
        os.makedirs(run.folder, exist_ok=True)
        overrides = {
            **self.finetuning,
            **finetuning,
            **REGIME_OVERRIDES[run.regime],
            **mixer_overrides(run.mixer, run.options),
            "seed": run.seed,
            "data_folder": self.corpus,
            "train_splits": f"[{labelled_split_name(run.labelled_minutes)}]",
            "output_folder": run.folder,
            "pt_model_path": (
                os.path.join(run.pretrain_folder, "save") if pretraining else "null"
            ),
            "optimizer_step_limit": run.finetune_steps,
        }
        minutes, peak = self.recipe(
            CTC_DIR,
            CTC_SCRIPT,
            overrides,
            os.path.join(run.folder, "driver.log"),
        )
        stats = last_epoch_stats(os.path.join(run.folder, CTC_EPOCH_LOG))
        run.row = {
            "params": _count_parameters(os.path.join(run.folder, "save")),
            "pretrain_steps": pretraining["steps"] if pretraining else 0,
            "pretrain_minutes": pretraining["minutes"] if pretraining else 0,
            # The recipe logs the steps it made (a time budget can stop it
            # early); the planned steps where it does not.
            "finetune_steps": int(stats.get("steps", run.finetune_steps)),
            "finetune_minutes": round(minutes, 2),
            "dev_cer": float(stats["valid CER"]),
            "test_cer": error_rate(os.path.join(run.folder, "cer_test-clean.txt")),
            "test_wer": error_rate(os.path.join(run.folder, "wer_test-clean.txt")),
            "peak_mib": round(max(peak, pretraining["peak_mib"] if pretraining else 0)),
            "device": self.device_name,
        }

    def pretraining_of(self, run):
        """The run's pre-training (None for a random encoder), run once even
        when several workers ask for it."""
        if run.regime not in PRETRAINED_REGIMES:
            return None
        with self.lock:
            future = self.pretrainings.get(run.pretrain_folder)
            if future is None:
                future = Future()
                self.pretrainings[run.pretrain_folder] = future
                owner = True
            else:
                owner = False
        if owner:
            try:
                future.set_result(self.pretrain(run))
            except BaseException as error:
                future.set_exception(error)
        return future.result()

    def run_one(self, run):
        """Pre-trains if needed, fine-tunes and records one run."""
        self.finetune(run, self.pretraining_of(run))
        self.record(run)

    def done_keys(self):
        return {tuple(row[c] for c in KEY_COLUMNS) for row in self.read_rows()}

    def read_rows(self):
        return read_rows(self.csv_file)

    def record(self, run):
        """Adds the run's row to runs.csv (rewritten whole, then renamed)."""
        with self.lock:
            rows = [*self.read_rows(), run.row_base()]
            rows.sort(key=lambda row: tuple(str(row[c]) for c in KEY_COLUMNS))
            temporary = self.csv_file + ".tmp"
            with open(temporary, "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(temporary, self.csv_file)
            print(
                f"done: {run.mixer} {run.options_text} seed {run.seed} "
                f"{run.regime} {run.labelled_minutes:g} min: test CER "
                f"{run.row['test_cer']}%",
                flush=True,
            )

    def main(self):
        for record in RECORD_FOLDERS:
            folder = os.path.join(RESULTS, record)
            if os.path.commonpath([self.results, folder]) == folder:
                sys.exit(
                    f"{self.results} is inside {folder}, the record of the "
                    "look-alike recipes: choose another --results folder."
                )
        os.makedirs(self.results, exist_ok=True)
        args = self.args
        if args.report_only:
            self.report()
            return
        self.corpus = generate_lowresource_corpus(
            os.path.join(self.work, "corpus"),
            unlabelled_hours=args.unlabelled_hours,
            labelled_minutes=args.labelled_minutes,
            n_dev=args.dev,
            n_test=args.test,
            seed=args.corpus_seed,
            num_workers=args.workers,
            show_progress=False,
        )
        self.largest_subset = labelled_split_name(max(args.labelled_minutes))
        done = self.done_keys()
        pending = [run for run in self.plan() if run.key() not in done]
        if args.jobs > 1:
            # The pre-trained runs first, so that pre-trainings start early.
            pending.sort(key=lambda run: run.regime not in PRETRAINED_REGIMES)
        failures = []
        with ThreadPoolExecutor(args.jobs) as pool:
            # The pool takes runs in order; rows arrive in that order with one job.
            futures = [pool.submit(self.run_one, run) for run in pending]
            for future in futures:
                try:
                    future.result()
                except RuntimeError as error:
                    failures.append(str(error))
        self.report()
        if failures:
            sys.exit("Failed runs:\n" + "\n".join(failures))

    def report(self):
        """Writes summary.json, table.md and the plots from runs.csv; prints
        the tables."""
        rows = self.read_rows()
        summary = summarise(rows)
        old_rows = read_rows(os.path.join(self.old_results, "runs.csv"))
        summary["old_results"] = os.path.relpath(self.old_results, REPO)
        summary["old_and_new"] = old_and_new(summarise(old_rows)["groups"], summary)
        with open(os.path.join(self.results, "summary.json"), "w") as stream:
            json.dump(summary, stream, indent=2)
        table = tables(summary)
        with open(os.path.join(self.results, "table.md"), "w") as stream:
            stream.write(table)
        plot(rows, self.results)
        print(table)


# ---------------------------------------------------------------- reading


def _slug(options):
    return "_".join(f"{key[0]}{value}" for key, value in options.items()) or "default"


def _pretraining_name(variant):
    """The name of a variant's pre-training: its settings and step factor."""
    settings, _ = VARIANTS[variant]
    name = "_".join(f"{key}{value}" for key, value in settings.items()) or "default"
    factor = PRETRAIN_STEP_FACTORS.get(variant, 1)
    return name if factor == 1 else f"{name}-x{factor}"


def _count_parameters(save_folder):
    """Learned parameters of a CTC run: its encoder and head, as its
    checkpoint holds them (buffers such as BatchNorm statistics and
    positional tables excluded)."""
    checkpoint = sorted(glob.glob(os.path.join(save_folder, "CKPT+*")))[-1]
    total = 0
    for recoverable in CTC_MODEL_RECOVERABLES:
        state = torch.load(
            os.path.join(checkpoint, f"{recoverable}.ckpt"), map_location="cpu"
        )
        total += sum(
            tensor.numel()
            for name, tensor in state.items()
            if name.rpartition(".")[2] not in BUFFER_NAMES
        )
    return total


def read_rows(csv_file):
    """The rows of a runs.csv file ([] when there is none)."""
    if not os.path.exists(csv_file):
        return []
    with open(csv_file, newline="") as stream:
        return list(csv.DictReader(stream))


def row_name(mixer, options):
    """The main study's name of a (mixer, options text) row, e.g. ``pom_C``."""
    for name, (row_mixer, row_options) in MAIN_ROWS.items():
        if (row_mixer, options_text(row_options)) == (mixer, options):
            return name
    return f"{mixer} {options}".strip()


# ---------------------------------------------------------------- summary


def summarise(rows):
    """Means and spreads over seeds, and the targets of the comparison."""
    groups = {}
    for row in rows:
        key = (
            row["study"],
            row["variant"],
            row["mixer"],
            row["options"],
            row["regime"],
            row["labelled_minutes"],
        )
        groups.setdefault(key, []).append(row)
    table = []
    for key, members in sorted(groups.items()):
        names = ("study", "variant", "mixer", "options", "regime")
        entry = dict(zip(names, key[:5], strict=True))
        entry["row"] = row_name(entry["mixer"], entry["options"])
        entry["labelled_minutes"] = float(key[5])
        members.sort(key=lambda row: int(row["seed"]))
        entry["seeds"] = [int(row["seed"]) for row in members]
        entry["test_cer_per_seed"] = [float(row["test_cer"]) for row in members]
        for column in ("test_cer", "test_wer", "dev_cer", "finetune_minutes"):
            values = [float(row[column]) for row in members]
            entry[column] = round(statistics.mean(values), 2)
            entry[column + "_sd"] = round(
                statistics.stdev(values) if len(values) > 1 else 0.0, 2
            )
            entry[column + "_range"] = [min(values), max(values)]
        entry["pretrain_minutes"] = round(
            statistics.mean(float(row["pretrain_minutes"]) for row in members), 2
        )
        entry["params"] = int(members[0]["params"])
        entry["device"] = members[0]["device"]
        table.append(entry)
    return {"groups": table, "targets": targets(table)}


def old_and_new(old_groups, summary):
    """The main study's groups beside those of the old results folder with
    the same mixer, options, regime and labelled subset (None where the old
    folder has no such row, e.g. formulation C and the weighted probes)."""
    pairs = []
    for entry in summary["groups"]:
        if entry["study"] != "main":
            continue
        old = _find(
            old_groups,
            study="main",
            mixer=entry["mixer"],
            options=entry["options"],
            regime=entry["regime"],
            labelled_minutes=entry["labelled_minutes"],
        )
        pairs.append(
            {
                "row": entry["row"],
                "regime": entry["regime"],
                "labelled_minutes": entry["labelled_minutes"],
                "params": entry["params"],
                "new_test_cer": entry["test_cer"],
                "new_test_cer_per_seed": entry["test_cer_per_seed"],
                "new_seeds": entry["seeds"],
                "old_params": old["params"] if old else None,
                "old_test_cer": old["test_cer"] if old else None,
                "old_test_cer_per_seed": old["test_cer_per_seed"] if old else None,
                "old_seeds": old["seeds"] if old else None,
            }
        )
    order = list(MAIN_ROWS)
    pairs.sort(
        key=lambda pair: (
            pair["labelled_minutes"],
            order.index(pair["row"]) if pair["row"] in order else len(order),
            REGIMES.index(pair["regime"]),
        )
    )
    return pairs


def _find(table, **wanted):
    for entry in table:
        if all(entry[key] == value for key, value in wanted.items()):
            return entry
    return None


def pretraining_gains(pretrained_groups, scratch):
    """Relative gain of each pre-trained group over ``scratch``, and whether
    it exceeds the seed spread and the issue's 20%."""
    gains = {}
    for pretrained in pretrained_groups:
        difference = scratch["test_cer"] - pretrained["test_cer"]
        spread = max(pretrained["test_cer_sd"], scratch["test_cer_sd"])
        gain = difference / scratch["test_cer"]
        gains[pretrained["variant"] + "/" + pretrained["row"]] = {
            "pretrained_cer": pretrained["test_cer"],
            "scratch_cer": scratch["test_cer"],
            "seeds": pretrained["seeds"],
            "relative_gain": round(gain, 3),
            "seed_spread": spread,
            "beyond_spread": difference > spread,
            "met_20_percent": gain >= 0.2,
        }
    return gains


def sweep_targets(table):
    """The sweep's variants against training from scratch, smallest subset."""
    sweep = [entry for entry in table if entry["study"] == "sweep"]
    if not sweep:
        return {}
    smallest = min(entry["labelled_minutes"] for entry in sweep)
    sweep = [entry for entry in sweep if entry["labelled_minutes"] == smallest]
    scratch = _find(sweep, variant="base", regime="scratch")
    if scratch is None:
        return {}
    pretrained = [entry for entry in sweep if entry["regime"] == "pretrained"]
    return {
        "labelled_minutes": smallest,
        "pretraining_gain": pretraining_gains(pretrained, scratch),
    }


def targets(table):
    """The issue's targets, on the main study's smallest labelled subset."""
    main = [entry for entry in table if entry["study"] == "main"]
    if not main:
        return sweep_targets(table)
    smallest = min(entry["labelled_minutes"] for entry in main)
    result = {"labelled_minutes": smallest, "pretraining_gain": {}}

    def group(row, regime):
        return _find(main, row=row, regime=regime, labelled_minutes=smallest)

    for row in sorted({entry["row"] for entry in main}):
        pretrained, scratch = group(row, "pretrained"), group(row, "scratch")
        if pretrained and scratch:
            (gain,) = pretraining_gains([pretrained], scratch).values()
            result["pretraining_gain"][row] = gain
    pom, mha, summary = (
        group("pom", "pretrained"),
        group("RelPosMHAXL", "pretrained"),
        group("summarymixing", "pretrained"),
    )
    if pom and mha:
        ratio = pom["test_cer"] / mha["test_cer"]
        result["pom_vs_relposmhaxl"] = {
            "ratio": round(ratio, 3),
            "met_within_10_percent": ratio <= 1.1,
        }
    if pom and summary:
        spread = max(pom["test_cer_sd"], summary["test_cer_sd"])
        result["pom_vs_summarymixing"] = {
            "difference": round(pom["test_cer"] - summary["test_cer"], 2),
            "seed_spread": spread,
            "met_no_worse_beyond_spread": pom["test_cer"] - summary["test_cer"]
            <= spread,
        }
    for suffix in ("", "_weighted"):
        probe_pre = group("pom", "probe_pretrained" + suffix)
        probe_random = group("pom", "probe_random" + suffix)
        if probe_pre and probe_random:
            result["pom_probe" + suffix] = {
                "pretrained_cer": probe_pre["test_cer"],
                "random_cer": probe_random["test_cer"],
                "met_pretrained_better": probe_pre["test_cer"]
                < probe_random["test_cer"],
            }
    return result


def _cer(mean, per_seed):
    """``44.12 (45.19, 43.05)``: the mean, then each seed's figure."""
    if mean is None:
        return "-"
    return f"{mean:.2f} (" + ", ".join(f"{value:.2f}" for value in per_seed) + ")"


def tables(summary):
    """table.md: the old and new figures side by side, every group, the
    targets."""
    lines = []
    if summary.get("old_and_new"):
        lines += [
            f"Test CER % on test-clean, mean (per seed); old: "
            f"`{summary['old_results']}` (the look-alike recipes), new: this "
            "folder (the faithful recipes with hparams/small_scale.yaml).",
            "",
            "| row | regime | labels (min) | parameters (old, new) "
            "| old test CER % | new test CER % |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for pair in summary["old_and_new"]:
            old_params = f"{pair['old_params']:,}" if pair["old_params"] else "-"
            lines.append(
                f"| {pair['row']} | {pair['regime']} | {pair['labelled_minutes']:g} "
                f"| {old_params}, {pair['params']:,} "
                f"| {_cer(pair['old_test_cer'], pair['old_test_cer_per_seed'])} "
                f"| {_cer(pair['new_test_cer'], pair['new_test_cer_per_seed'])} |"
            )
        lines.append("")
    lines += [
        "| study | variant | row | regime | labels (min) | seeds "
        "| test CER % (sd) | test WER % | dev CER % "
        "| minutes (pre-train + fine-tune) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in summary["groups"]:
        lines.append(
            f"| {entry['study']} | {entry['variant']} | {entry['row']} "
            f"| {entry['regime']} | {entry['labelled_minutes']:g} "
            f"| {len(entry['seeds'])} "
            f"| {entry['test_cer']:.1f} ({entry['test_cer_sd']:.1f}) "
            f"| {entry['test_wer']:.1f} | {entry['dev_cer']:.1f} "
            f"| {entry['pretrain_minutes']:.1f} + {entry['finetune_minutes']:.1f} |"
        )
    lines += ["", "Targets:", "", "```json"]
    lines += [json.dumps(summary["targets"], indent=2), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ plots


def plot(rows, folder):
    """test_cer.png (per mixer row and regime, mean and spread over seeds)
    and cer_vs_time.png (test CER against training wall time), main study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [row for row in rows if row["study"] == "main"]
    if not main:
        return
    for row in main:
        row["row"] = row_name(row["mixer"], row["options"])
    smallest = min(float(row["labelled_minutes"]) for row in main)
    order = list(MAIN_ROWS)
    names = sorted(
        {row["row"] for row in main},
        key=lambda name: (order.index(name) if name in order else len(order), name),
    )
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(REGIMES)
    for index, regime in enumerate(REGIMES):
        for position, name in enumerate(names):
            values = [
                float(row["test_cer"])
                for row in main
                if row["row"] == name
                and row["regime"] == regime
                and float(row["labelled_minutes"]) == smallest
            ]
            if not values:
                continue
            x = position + (index - (len(REGIMES) - 1) / 2) * width
            axis.bar(
                x,
                statistics.mean(values),
                width,
                color=f"C{index}",
                label=regime if position == 0 else None,
            )
            axis.plot([x] * len(values), values, "k.", markersize=4)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylabel("test CER (%)")
    axis.set_title(f"{smallest:g} minutes of labels: mean over seeds, dots = seeds")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "test_cer.png"), dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(MAIN_ROWS, "osD^v", strict=True))
    for index, regime in enumerate(("pretrained", "scratch")):
        for name in names:
            points = [
                (
                    float(row["pretrain_minutes"]) + float(row["finetune_minutes"]),
                    float(row["test_cer"]),
                )
                for row in main
                if row["row"] == name and row["regime"] == regime
            ]
            if points:
                axis.scatter(
                    *zip(*points, strict=True),
                    color=f"C{index}",
                    marker=markers.get(name, "x"),
                    label=f"{name}, {regime}",
                )
    axis.set_xlabel("wall minutes (pre-training + fine-tuning processes)")
    axis.set_ylabel("test CER (%)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(folder, "cer_vs_time.png"), dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--study", choices=("main", "ablation", "sweep"), default="main"
    )
    parser.add_argument(
        "--work", default="results/compare-parity", help="runs and corpus"
    )
    parser.add_argument("--results", default=DEFAULT_RESULTS)
    parser.add_argument(
        "--old-results",
        default=DEFAULT_OLD_RESULTS,
        help="the runs.csv folder whose figures table.md sets beside the new",
    )
    parser.add_argument(
        "--mixers",
        nargs="+",
        default=list(MAIN_ROWS),
        choices=MAIN_ROWS,
        help="rows of the main study (pom_C: PoM formulation C)",
    )
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=VARIANTS,
        help="the variants that the sweep tries",
    )
    parser.add_argument(
        "--variant",
        default=ADOPTED_VARIANT,
        choices=VARIANTS,
        help="the variant of the main study and the ablation",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--labelled-minutes", nargs="+", type=float, default=[5, 10, 60]
    )
    parser.add_argument(
        "--run-minutes",
        nargs="+",
        type=float,
        help="run only these labelled subsets (default: those of the study)",
    )
    parser.add_argument("--unlabelled-hours", type=float, default=5.0)
    parser.add_argument("--dev", type=int, default=100, help="dev utterances")
    parser.add_argument("--test", type=int, default=150, help="test utterances")
    parser.add_argument("--corpus-seed", type=int, default=1234)
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=SMALL_PRETRAINING["optimizer_step_limit"],
    )
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=SMALL_FINETUNING["optimizer_step_limit"],
    )
    parser.add_argument(
        "--probe-steps", type=int, default=SMALL_FINETUNING["optimizer_step_limit"]
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:0")
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only write summary.json, table.md and the plots from runs.csv",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few utterances, a tiny model, 4 steps"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.labelled_minutes = [0.5, 1.0]
        args.unlabelled_hours = 0.02
        args.dev = args.test = 6
        args.seeds = args.seeds[:1]
        args.pretrain_steps = args.finetune_steps = args.probe_steps = 4
        if args.study == "main":
            args.mixers = args.mixers[:1]
    Driver(args).main()


if __name__ == "__main__":
    main()
