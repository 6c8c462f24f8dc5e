#!/usr/bin/env python3
"""BEST-RQ self-supervised pre-training of a Conformer encoder whose token
mixer is chosen in the yaml (PoM by default).

The encoder sees filterbanks in which spans of frames are replaced by noise
and learns to predict, at the masked frames, the codebook index that a frozen
random-projection quantiser gives for the clean frames.

The train splits are prepared and merged into ``train_csv``; with
``--skip_prep True`` nothing is prepared and ``train_csv`` and ``valid_csv``
are read as they are.

To run this recipe:
    python train.py hparams/bestrq_pom.yaml --data_folder /path/to/LibriSpeech
On several GPUs:
    torchrun --nproc_per_node=4 train.py hparams/bestrq_pom.yaml --data_folder ...

Authors
* speechbrain-pom contributors 2026
"""

import functools
import os
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio import audio_io
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.preprocess import AudioNormalizer
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.lobes.models.BESTRQ import brq_mask_collate_fn
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_pom.recipe_checks import (
    OutputFolderLock,
    RecipeValueError,
    check_can_stream,
    check_csv_files,
    check_recipe_values,
)
from speechbrain_pom.training import TimeBudgetBrain, frames_after_frontend

logger = get_logger(__name__)


class BestRQBrain(TimeBudgetBrain):
    """Masked prediction of random-projection codebook indices."""

    def compute_forward(self, batch, stage):
        """Masks the filterbanks, encodes them and scores every codebook entry
        at the masked encoder frames."""
        wavs, wav_lens, mask = (tensor.to(self.device) for tensor in batch)
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(
            feats, wav_lens, epoch=self.hparams.epoch_counter.current
        )

        # Pad time to a whole number of front-end strides so that every
        # encoder frame owns exactly `reduction` filterbank frames.
        reduction = self.hparams.frontend_reduction
        feats = F.pad(feats, (0, 0, 0, -feats.shape[1] % reduction))
        batch_size, num_frames, num_mels = feats.shape
        stacked = feats.reshape(
            batch_size, num_frames // reduction, reduction * num_mels
        )
        with torch.no_grad():
            targets = self.modules.Quantizer(stacked.float())

        # The mask indexes encoder frames; noise replaces the filterbank frames
        # that they own.
        masked = stacked.clone()
        masked[:, mask] = self.hparams.noise_std * torch.randn_like(masked[:, mask])
        masked = masked.reshape(batch_size, num_frames, num_mels)

        # Dynamic Chunk Training: a chunk size and left context drawn per batch
        # (the sampler's valid_config in validation). The masked spans are
        # drawn independently of the chunks, as in SpeechBrain's BEST-RQ.
        dynchunktrain_config = (
            self.hparams.dynchunktrain_config_sampler(stage)
            if self.hparams.streaming
            else None
        )
        latents = self.modules.CNN(masked)
        encoded = self.modules.wrapper(
            latents, wav_lens, dynchunktrain_config=dynchunktrain_config
        )
        logits = self.modules.linear(encoded[:, mask])
        return logits, targets[:, mask]

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy of the codebook index at the masked frames."""
        logits, targets = predictions
        logits = logits.reshape(-1, logits.shape[-1]).float()
        targets = targets.reshape(-1)
        loss = F.cross_entropy(logits, targets)
        if stage != sb.Stage.TRAIN:
            self.accuracy.append((logits.argmax(-1) == targets).float().mean().item())
        return loss

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Steps the Noam learning-rate schedule after each optimiser step."""
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        """Resets the masked-prediction accuracy."""
        self.accuracy = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the losses and saves a checkpoint after validation."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        stats = {
            "loss": stage_loss,
            "accuracy": sum(self.accuracy) / max(len(self.accuracy), 1),
        }
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "steps": self.optimizer_step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "minutes": round(self.minutes_trained(), 2),
                },
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"loss": stage_loss, "steps": self.optimizer_step},
                end_of_epoch=True,
                num_to_keep=self.hparams.num_checkpoints_kept,
                min_keys=["loss"],
            )


def dataio_prepare(
    data_folder,
    train_csv,
    valid_csv,
    sample_rate,
    avoid_if_longer_than,
    collate_fn,
    max_batch_length,
    num_buckets,
    shuffle,
    num_workers,
):
    """Builds the train and valid datasets and their dataloader options.

    Arguments
    ---------
    data_folder : str
        Replaces ``$data_root`` in the csv files.
    train_csv, valid_csv : str
        The training and validation csv files.
    sample_rate : int
        Audio is resampled (and downmixed) to this rate.
    avoid_if_longer_than : float
        Utterances longer than this (seconds) are left out.
    collate_fn : callable
        Pads the waveforms of a batch and draws its mask.
    max_batch_length : float
        Seconds of audio per batch (dynamic batching).
    num_buckets : int
        Length buckets of the dynamic batching.
    shuffle : bool
        Whether training batches come in random order.
    num_workers : int
        Data loading processes.

    Returns
    -------
    datasets : dict
        ``{"train": ..., "valid": ...}``.
    loader_options : dict
        Dataloader keyword arguments with the same keys.
    """
    audio_normalizer = AudioNormalizer(sample_rate=sample_rate)
    datasets = {}
    for name, csv_file in (("train", train_csv), ("valid", valid_csv)):
        dataset = DynamicItemDataset.from_csv(
            csv_path=csv_file, replacements={"data_root": data_folder}
        )
        datasets[name] = dataset.filtered_sorted(
            sort_key="duration", key_max_value={"duration": avoid_if_longer_than}
        )

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        signal, file_sample_rate = audio_io.load(wav, channels_first=False)
        return audio_normalizer(signal, file_sample_rate)

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), audio_pipeline)
    sb.dataio.dataset.set_output_keys(list(datasets.values()), ["id", "sig"])

    loader_options = {}
    for name, dataset in datasets.items():
        shuffled = shuffle and name == "train"
        sampler = DynamicBatchSampler(
            dataset,
            max_batch_length=max_batch_length,
            num_buckets=num_buckets,
            length_func=lambda item: float(item["duration"]),
            shuffle=shuffled,
            batch_ordering="random" if shuffled else "descending",
        )
        loader_options[name] = {
            "batch_sampler": sampler,
            "collate_fn": collate_fn,
            "num_workers": num_workers,
        }
    return datasets, loader_options


def main():
    """Runs the recipe: checks, data preparation, then pre-training."""
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    try:
        check_recipe_values(
            flags={
                "skip_prep": hparams["skip_prep"],
                "skip_bad_files": hparams["skip_bad_files"],
                "shuffle": hparams["shuffle"],
                "streaming": hparams["streaming"],
            },
            lists={
                "train_splits": hparams["train_splits"],
                "dev_splits": hparams["dev_splits"],
            },
            non_negative_numbers={"max_train_minutes": hparams["max_train_minutes"]},
        )
        check_can_stream(hparams["streaming"], hparams["mixer"])
        sb.utils.distributed.ddp_init_group(run_opts)
        output_folder_lock = OutputFolderLock(hparams["output_folder"])
    except RecipeValueError as error:
        sys.exit(f"error: {error}")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    # With skip_prep, the csv files given are read as they are.
    if not hparams["skip_prep"]:
        from librispeech_prepare import prepare_librispeech

        run_on_main(
            prepare_librispeech,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["save_folder"],
                "tr_splits": hparams["train_splits"],
                "dev_splits": hparams["dev_splits"],
                "te_splits": [],
                "merge_lst": hparams["train_splits"],
                # The merged csv is written at train_csv.
                "merge_name": os.path.relpath(
                    hparams["train_csv"], hparams["save_folder"]
                ),
                "skip_bad_files": hparams["skip_bad_files"],
            },
        )

    try:
        check_csv_files(
            {"train_csv": hparams["train_csv"], "valid_csv": hparams["valid_csv"]}
        )
    except RecipeValueError as error:
        sys.exit(f"error: {error}")

    collate_fn = functools.partial(
        brq_mask_collate_fn,
        get_out_len_fn=functools.partial(
            frames_after_frontend, reduction=hparams["frontend_reduction"]
        ),
        mask_prob=hparams["mask_prob"],
        mask_length=hparams["mask_length"],
        n_mels=hparams["n_mels"],
    )
    datasets, loader_options = dataio_prepare(
        data_folder=hparams["data_folder"],
        train_csv=hparams["train_csv"],
        valid_csv=hparams["valid_csv"],
        sample_rate=hparams["sample_rate"],
        avoid_if_longer_than=hparams["avoid_if_longer_than"],
        collate_fn=collate_fn,
        max_batch_length=hparams["max_batch_length"],
        num_buckets=hparams["num_buckets"],
        shuffle=hparams["shuffle"],
        num_workers=hparams["num_workers"],
    )

    brain = BestRQBrain(
        max_train_minutes=hparams["max_train_minutes"],
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    num_params = sum(
        p.numel() for p in hparams["model"].parameters() if p.requires_grad
    )
    logger.info(
        f"Encoder mixer: {hparams['mixer']}; trainable parameters: {num_params:,}"
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=loader_options["train"],
        valid_loader_kwargs=loader_options["valid"],
    )
    logger.info(f"Checkpoints are in {hparams['save_folder']}")
    output_folder_lock.release()


if __name__ == "__main__":
    main()
