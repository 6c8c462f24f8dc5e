"""The self-supervised story on a generated corpus, with small models on CPU.

1. generate a low-resource English speech corpus (offline synthesis): about
   5 hours of unlabelled speech from many voices, labelled subsets of 5, 10
   and 60 minutes, dev and test on held-out voices;
2. pre-train a PoM Conformer with BEST-RQ on the unlabelled speech;
3. fine-tune it with CTC on the 5 labelled minutes, with Dynamic Chunk
   Training (``streaming: True``) so that the model also streams, decode the
   test set and write an inference folder;
4. train the same CTC model from scratch on the same 5 minutes, for the same
   number of steps (at its own best learning rates), also with chunks;
5. transcribe one test file offline and streaming (chunks of 320 ms, all the
   left context) and print a results table.

Every step runs the repository's recipes (SpeechBrain's BEST-RQ and CTC
recipes with PoM) as a user would, the commands printed, with the small CPU
setting of ``hparams/small_scale.yaml`` as overrides. The steps and settings
are those of the PoM rows of
``benchmarks/compare_mixers.py --study main`` (seed 1), which repeats them
for other mixers and seeds, except for the chunks (``--no-streaming``
fine-tunes without them, as there).

Usage: python -m tools.demo --out results/demo

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import json
import os
import subprocess
import sys
import time

from tools.experiments import (
    BESTRQ_DIR,
    BESTRQ_SCRIPT,
    CTC_DIR,
    CTC_SCRIPT,
    PRETRAINED_FINETUNING,
    SCRATCH_FINETUNING,
    SMALL_FINETUNING,
    SMALL_PRETRAINING,
    error_rate,
    run_recipe,
)
from tools.tiny_corpus import (
    UNLABELLED_SPLIT,
    generate_lowresource_corpus,
    labelled_split_name,
)

LABELLED_MINUTES = (5, 10, 60)
# Streaming transcription of the test file: 8 encoder frames (320 ms) per
# chunk, the size the recipes validate with, and all the left context.
STREAMING_CHUNK_SIZE = 8
STREAMING_LEFT_CHUNKS = "none"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--unlabelled-hours", type=float, default=5.0)
    parser.add_argument(
        "--labelled-minutes",
        type=float,
        default=LABELLED_MINUTES[0],
        choices=LABELLED_MINUTES,
        help="the labelled subset used for fine-tuning",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=SMALL_PRETRAINING["optimizer_step_limit"],
    )
    parser.add_argument(
        "--finetune-steps", type=int, default=SMALL_FINETUNING["optimizer_step_limit"]
    )
    parser.add_argument(
        "--no-streaming",
        action="store_true",
        help="fine-tune without Dynamic Chunk Training (the test file is "
        "still transcribed streaming too)",
    )
    args = parser.parse_args(argv)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    demo_start = time.time()
    corpus = generate_lowresource_corpus(
        os.path.join(out, "corpus"),
        unlabelled_hours=args.unlabelled_hours,
        labelled_minutes=LABELLED_MINUTES,
    )
    common = {"data_folder": corpus, "seed": args.seed}

    pretrain_dir = os.path.join(out, "pretrain")
    pretrain_minutes, _ = run_recipe(
        BESTRQ_DIR,
        *BESTRQ_SCRIPT,
        {
            **SMALL_PRETRAINING,
            **common,
            "train_splits": f"[{UNLABELLED_SPLIT}, {labelled_split_name(60)}]",
            "output_folder": pretrain_dir,
            "optimizer_step_limit": args.pretrain_steps,
        },
        os.path.join(out, "pretrain.log"),
        progress=True,
    )

    def finetune(name, pt_model_path, learning_rates):
        folder = os.path.join(out, name)
        minutes, _ = run_recipe(
            CTC_DIR,
            *CTC_SCRIPT,
            {
                **SMALL_FINETUNING,
                **learning_rates,
                **common,
                "train_splits": f"[{labelled_split_name(args.labelled_minutes)}]",
                "output_folder": folder,
                "pt_model_path": pt_model_path,
                "optimizer_step_limit": args.finetune_steps,
                "streaming": not args.no_streaming,
                "inference_folder": os.path.join(
                    out, "model" if pt_model_path != "null" else "scratch_model"
                ),
            },
            os.path.join(out, f"{name}.log"),
            progress=True,
        )
        return (
            minutes,
            error_rate(os.path.join(folder, "wer_test-clean.txt")),
            error_rate(os.path.join(folder, "cer_test-clean.txt")),
        )

    try:
        finetune_minutes, test_wer, test_cer = finetune(
            "finetune", os.path.join(pretrain_dir, "save"), PRETRAINED_FINETUNING
        )
        scratch_minutes, scratch_wer, scratch_cer = finetune(
            "scratch", "null", SCRATCH_FINETUNING
        )
    except RuntimeError as error:
        sys.exit(f"Step failed: {error}")

    test_file = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(corpus, "test-clean"))
        for name in names
        if name.endswith(".flac")
    )[0]

    def transcribe(*options):
        command = [sys.executable, "-m", "speechbrain_pom.inference.transcribe"]
        command += ["--model", os.path.join(out, "model"), *options, test_file]
        print("$ python " + " ".join(command[1:]), flush=True)
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        return result.stdout.strip()

    offline_transcription = transcribe()
    streaming_transcription = transcribe(
        "--streaming",
        "--chunk-size",
        str(STREAMING_CHUNK_SIZE),
        "--left-chunks",
        STREAMING_LEFT_CHUNKS,
    )

    summary = {
        "mixer": "pom",
        "labelled_minutes": args.labelled_minutes,
        "pretrain_steps": args.pretrain_steps,
        "finetune_steps": args.finetune_steps,
        "streaming_training": not args.no_streaming,
        "test_wer": test_wer,
        "test_cer": test_cer,
        "pretrain_minutes": round(pretrain_minutes, 2),
        "finetune_minutes": round(finetune_minutes, 2),
        "scratch_test_wer": scratch_wer,
        "scratch_test_cer": scratch_cer,
        "scratch_minutes": round(scratch_minutes, 2),
        "relative_cer_gain": round(1 - test_cer / scratch_cer, 3),
        "total_minutes": round((time.time() - demo_start) / 60.0, 2),
        "model": os.path.join(out, "model"),
    }
    with open(os.path.join(out, "summary.json"), "w") as fout:
        json.dump(summary, fout, indent=2)

    print(
        "\nTranscription of one held-out test file:\n"
        f"  offline:   {offline_transcription}\n"
        f"  streaming: {streaming_transcription}\n"
        f"  (streaming: chunks of {STREAMING_CHUNK_SIZE * 40} ms, all the left "
        "context, transcript printed as it grows)"
    )
    labels = f"{args.labelled_minutes:g} min of labels"
    rows = [
        ("PoM Conformer, 144 x 4", "wall minutes", "test CER %", "test WER %"),
        ("---", "---", "---", "---"),
        (
            f"BEST-RQ ({args.unlabelled_hours:g} h unlabelled) + CTC ({labels})",
            f"{pretrain_minutes:.1f} + {finetune_minutes:.1f}",
            f"{test_cer:.1f}",
            f"{test_wer:.1f}",
        ),
        (
            f"CTC from scratch ({labels}, same steps)",
            f"{scratch_minutes:.1f}",
            f"{scratch_cer:.1f}",
            f"{scratch_wer:.1f}",
        ),
    ]
    print()
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        "\nRelative test CER gain from pre-training: "
        f"{summary['relative_cer_gain']:.1%} (from scratch / pre-trained: "
        f"{scratch_cer:.1f} / {test_cer:.1f})."
    )
    print(f"Inference folder: {summary['model']}")
    print(f"Summary: {os.path.join(out, 'summary.json')}")


if __name__ == "__main__":
    main()
