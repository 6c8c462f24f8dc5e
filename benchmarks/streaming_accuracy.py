"""Greedy CER of an inference folder with the full context and with chunks:
what streaming costs a model (or does not, if it was trained with chunks).

Each utterance of a recipe csv file is encoded whole, once per configuration
(``encode(..., dynchunktrain_config=...)``, which equals the streamed
encoder's output), and decoded greedily.

Usage:
    .venv/bin/python benchmarks/streaming_accuracy.py --model results/demo/model \
        --csv results/demo/finetune/save/test-clean.csv \
        --data-folder results/demo/corpus/LibriSpeech

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import csv

import torch
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from speechbrain.utils.metric_stats import ErrorRateStats

from speechbrain_pom.inference.transcribe import load_model

# Name -> configuration; None is the full context.
CONFIGS = {
    "full context": None,
    "320 ms chunks, all the left context": DynChunkTrainConfig(8, None),
    "320 ms chunks, 16 chunks of left context": DynChunkTrainConfig(8, 16),
}


def greedy_transcripts(model, audio, configs):
    """``{name: transcript}`` of one utterance for each chunk configuration."""
    hparams = model.hparams
    whole = torch.ones(1)
    features = hparams.normalize(hparams.compute_features(audio), whole)
    frames = hparams.CNN(features)
    transcripts = {}
    for name, config in configs.items():
        encoded = hparams.wrapper(frames, whole, dynchunktrain_config=config)
        (token_ids,) = ctc_greedy_decode(
            hparams.ctc_lin(encoded), whole, blank_id=hparams.blank_index
        )
        transcripts[name] = "".join(model.tokenizer.decode_ndim(token_ids))
    return transcripts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="inference folder (chars)")
    parser.add_argument("--csv", required=True, help="recipe csv (ID, wav, wrd)")
    parser.add_argument("--data-folder", required=True, help="replaces $data_root")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    stats = {name: ErrorRateStats(split_tokens=True) for name in CONFIGS}
    with open(args.csv, encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin))
    with torch.no_grad():
        for row in rows:
            path = row["wav"].replace("$data_root", args.data_folder)
            audio = model.load_audio(path)[None]
            for name, text in greedy_transcripts(model, audio, CONFIGS).items():
                stats[name].append([row["ID"]], [text.split()], [row["wrd"].split()])
    print(f"{args.model}, {len(rows)} utterances of {args.csv}, greedy decoding")
    for name, stat in stats.items():
        print(f"{name:>42}: CER {stat.summarize('error_rate'):.2f}%")


if __name__ == "__main__":
    main()
