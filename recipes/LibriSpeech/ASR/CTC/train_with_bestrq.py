#!/usr/bin/env python3
"""CTC fine-tuning on LibriSpeech of a Conformer encoder pre-trained with
BEST-RQ (token mixer chosen in the yaml, PoM by default).

The CNN front-end, the encoder and the input statistics are loaded, strictly,
from the BEST-RQ checkpoint given by ``pt_model_path``; a linear CTC head is
trained on top. Validation uses greedy decoding, test a CTC beam search
(``wer_<test set>.txt`` and ``cer_<test set>.txt`` in the output folder), and
the final model is exported for ``speechbrain.inference.ASR.EncoderASR``.
The Brain and the data loading are shared with the CommonVoice recipe
(``speechbrain_pom.ctc``).

To run this recipe:
    python train_with_bestrq.py hparams/ctc_bestrq_pom.yaml \
        --data_folder /path/to/LibriSpeech \
        --pt_model_path /path/to/BEST-RQ/results/bestrq_pom/1000/save
From scratch (no pre-training): --pt_model_path null

Authors
* speechbrain-pom contributors 2026
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataio import merge_csvs
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

    from librispeech_prepare import prepare_librispeech

    save_folder = hparams["save_folder"]
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": save_folder,
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "skip_prep": hparams["skip_prep"],
            "skip_bad_files": hparams["skip_bad_files"],
        },
    )
    run_on_main(
        merge_csvs,
        kwargs={
            "data_folder": save_folder,
            "csv_lst": [f"{split}.csv" for split in hparams["train_splits"]],
            "merged_csv": os.path.basename(hparams["train_csv"]),
        },
    )
    test_csvs = {
        split: os.path.join(save_folder, f"{split}.csv")
        for split in hparams["test_splits"]
    }
    encoder_hparams_file = os.path.join(
        os.path.dirname(os.path.abspath(hparams_file)),
        hparams["encoder_hparams_file"],
    )
    fine_tune(hparams, run_opts, test_csvs, encoder_hparams_file)


if __name__ == "__main__":
    main()
