#!/usr/bin/env python3
"""CTC fine-tuning on CommonVoice of a Conformer encoder pre-trained with
BEST-RQ (token mixer chosen in the yaml, PoM by default).

Same model, loading, decoding and export as the LibriSpeech recipe (shared in
``speechbrain_pom.ctc``), with a SentencePiece tokenizer trained on the
training transcripts. Rows of the tsv files that cannot be used (missing or
unreadable clips, empty sentences) are skipped by the preparation and listed
in ``<save_folder>/<split>_skipped.txt``.

To run this recipe:
    python train_with_bestrq.py hparams/ctc_bestrq_pom.yaml \
        --data_folder /path/to/CommonVoice/en --language en \
        --pt_model_path /path/to/BEST-RQ/results/bestrq_pom/1000/save

Authors
* speechbrain-pom contributors 2026
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from speechbrain_pom.ctc import fine_tune


def main():
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    from common_voice_prepare import prepare_common_voice

    run_on_main(
        prepare_common_voice,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["save_folder"],
            "language": hparams["language"],
            "skip_prep": hparams["skip_prep"],
        },
    )
    encoder_hparams_file = os.path.join(
        os.path.dirname(os.path.abspath(hparams_file)),
        hparams["encoder_hparams_file"],
    )
    fine_tune(hparams, run_opts, {"test": hparams["test_csv"]}, encoder_hparams_file)


if __name__ == "__main__":
    main()
