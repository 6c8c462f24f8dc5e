"""The whole story on a generated corpus, with small models on CPU.

1. generate a tiny English speech corpus (offline synthesis, held-out voices
   for dev and test);
2. pre-train a PoM Conformer with BEST-RQ;
3. fine-tune it with CTC, decode the test set, write an inference folder;
4. train the same CTC model from scratch for the same total time;
5. transcribe one test file and print a results table.

Every step runs the repository's recipes as a user would (the commands are
printed), with wall-clock budgets so that the demo ends on time.

Usage: python -m speechbrain_pom.demo --out results/demo

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from speechbrain_pom.data.tiny_corpus import generate_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESTRQ_DIR = os.path.join(REPO, "recipes/LibriSpeech/self-supervised-learning/BEST-RQ")
CTC_DIR = os.path.join(REPO, "recipes/LibriSpeech/ASR/CTC")

# The small-model setting of the recipes: a 4-layer, 144-wide Conformer.
SMALL_ENCODER = {
    "d_model": 144,
    "nhead": 4,
    "num_encoder_layers": 4,
    "d_ffn": 576,
    "kernel_size": 15,
    "precision": "fp32",
    "num_workers": 0,
    "train_splits": "[train-clean-100]",
}
# glibc returns large freed blocks to the system and maps them again on the
# next step; keeping them made the demo's first pre-training epoch 1.47x
# faster on this project's 2-core machine.
# Settings already in the environment win.
RECIPE_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
    **os.environ,
}
SMALL_PRETRAINING = {
    "cb_vocab": 1024,
    "max_batch_length": 50,
    "num_buckets": 10,
    "lr": 0.001,
    "n_warmup_steps": 100,
    "ckpt_interval_minutes": 0,
}
SMALL_FINETUNING = {
    "max_batch_length": 50,
    "num_buckets": 10,
    "test_splits": "[test-clean]",
    # Small data, short budget: the encoder learns at the head's rate and the
    # clean synthetic speech needs no augmentation.
    "lr_encoder": 0.0008,
    "lr_head": 0.001,
    "augment": False,
}


def as_arguments(overrides):
    """``{"key": value}`` -> ["--key", "value", ...] for SpeechBrain's parser."""
    return [
        item for key, value in overrides.items() for item in (f"--{key}", str(value))
    ]


def run_recipe(folder, script, hparams, overrides, log_path):
    """Runs a recipe script from its folder; returns the wall-clock minutes."""
    command = [sys.executable, script, hparams, *as_arguments(overrides)]
    print(
        "\n$ cd " + os.path.relpath(folder) + " && " + " ".join(command[1:]), flush=True
    )
    start = time.time()
    with open(log_path, "w") as log:
        # Progress bars go to the console, everything else to the log as well.
        process = subprocess.run(
            command, cwd=folder, env=RECIPE_ENVIRONMENT, stdout=log, stderr=sys.stderr
        )
    if process.returncode != 0:
        sys.exit(f"Step failed ({process.returncode}); its log: {log_path}")
    return (time.time() - start) / 60.0


def error_rate(path):
    """The %WER (or %CER) figure of a SpeechBrain ErrorRateStats file."""
    with open(path) as stats:
        match = re.search(r"%(?:WER|CER) ([\d.]+)", stats.read())
    if match is None:
        raise ValueError(f"No error rate found in {path}")
    return float(match.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--train", type=int, default=1500, help="training utterances")
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--test", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--pretrain-minutes", type=float, default=4.0)
    parser.add_argument("--finetune-minutes", type=float, default=6.0)
    args = parser.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    demo_start = time.time()
    corpus = generate_corpus(
        os.path.join(out, "corpus"), args.train, args.dev, args.test, seed=args.seed
    )
    encoder = {**SMALL_ENCODER, "data_folder": corpus}

    pretrain_dir = os.path.join(out, "pretrain")
    pretrain_minutes = run_recipe(
        BESTRQ_DIR,
        "train.py",
        "hparams/bestrq_pom.yaml",
        {
            **encoder,
            **SMALL_PRETRAINING,
            "output_folder": pretrain_dir,
            "max_train_minutes": args.pretrain_minutes,
        },
        os.path.join(out, "pretrain.log"),
    )

    def finetune(name, pt_model_path, minutes):
        folder = os.path.join(out, name)
        elapsed = run_recipe(
            CTC_DIR,
            "train_with_bestrq.py",
            "hparams/ctc_bestrq_pom.yaml",
            {
                **encoder,
                **SMALL_FINETUNING,
                "output_folder": folder,
                "pt_model_path": pt_model_path,
                "max_train_minutes": minutes,
                "inference_folder": os.path.join(
                    out, "model" if pt_model_path != "null" else "scratch_model"
                ),
            },
            os.path.join(out, f"{name}.log"),
        )
        return (
            elapsed,
            error_rate(os.path.join(folder, "wer_test-clean.txt")),
            error_rate(os.path.join(folder, "cer_test-clean.txt")),
        )

    finetune_minutes, test_wer, test_cer = finetune(
        "finetune", os.path.join(pretrain_dir, "save"), args.finetune_minutes
    )
    scratch_budget = args.pretrain_minutes + args.finetune_minutes
    scratch_minutes, scratch_wer, scratch_cer = finetune(
        "scratch", "null", scratch_budget
    )

    test_file = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(corpus, "test-clean"))
        for name in names
        if name.endswith(".flac")
    )[0]
    transcription = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechbrain_pom.transcribe",
            "--model",
            os.path.join(out, "model"),
            test_file,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    summary = {
        "mixer": "pom",
        "test_wer": test_wer,
        "test_cer": test_cer,
        "pretrain_minutes": round(pretrain_minutes, 2),
        "finetune_minutes": round(finetune_minutes, 2),
        "scratch_test_wer": scratch_wer,
        "scratch_test_cer": scratch_cer,
        "scratch_minutes": round(scratch_minutes, 2),
        "total_minutes": round((time.time() - demo_start) / 60.0, 2),
        "train_utterances": args.train,
        "test_utterances": args.test,
        "model": os.path.join(out, "model"),
    }
    with open(os.path.join(out, "summary.json"), "w") as fout:
        json.dump(summary, fout, indent=2)

    print("\nTranscription of one held-out test file:\n  " + transcription)
    rows = [
        ("model (PoM Conformer, 144 x 4)", "wall minutes", "test CER %", "test WER %"),
        ("---", "---", "---", "---"),
        (
            "BEST-RQ pre-training + CTC fine-tuning",
            f"{pretrain_minutes:.1f} + {finetune_minutes:.1f}",
            f"{test_cer:.1f}",
            f"{test_wer:.1f}",
        ),
        (
            "CTC from scratch, same budget",
            f"{scratch_minutes:.1f}",
            f"{scratch_cer:.1f}",
            f"{scratch_wer:.1f}",
        ),
    ]
    print()
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nInference folder: {summary['model']}")
    print(f"Summary: {os.path.join(out, 'summary.json')}")


if __name__ == "__main__":
    main()
