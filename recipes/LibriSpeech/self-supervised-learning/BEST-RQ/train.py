#!/usr/bin/env python3
"""BEST-RQ self-supervised pre-training of a Conformer encoder whose token
mixer is chosen in the yaml (PoM by default).

The encoder sees filterbanks in which spans of frames are replaced by noise
and learns to predict, at the masked frames, the codebook index that a frozen
random-projection quantiser gives for the clean frames.

To run this recipe:
    python train.py hparams/bestrq_pom.yaml --data_folder /path/to/LibriSpeech
On several GPUs:
    torchrun --nproc_per_node=4 train.py hparams/bestrq_pom.yaml --data_folder ...

Authors
* speechbrain-pom contributors 2026
"""

import functools
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataio import read_audio
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.lobes.models.BESTRQ import brq_mask_collate_fn
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.logger import get_logger

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

        latents = self.modules.CNN(masked)
        encoded = self.modules.wrapper(latents, wav_lens)
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


def merge_csvs(csv_files, merged_csv):
    """Concatenates the csv files of several splits (same header) into one."""
    with open(merged_csv, "w", encoding="utf-8", newline="") as out:
        for index, csv_file in enumerate(csv_files):
            with open(csv_file, encoding="utf-8") as fin:
                lines = fin.readlines()
            out.writelines(lines if index == 0 else lines[1:])


def dataio_prepare(hparams):
    """Builds the train and valid datasets and their dataloader options."""
    data_folder = hparams["data_folder"]
    datasets = {}
    for name in ("train", "valid"):
        dataset = DynamicItemDataset.from_csv(
            csv_path=hparams[f"{name}_csv"], replacements={"data_root": data_folder}
        )
        datasets[name] = dataset.filtered_sorted(
            sort_key="duration",
            key_max_value={"duration": hparams["avoid_if_longer_than"]},
        )

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio(wav)

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), audio_pipeline)
    sb.dataio.dataset.set_output_keys(list(datasets.values()), ["id", "sig"])

    collate_fn = functools.partial(
        brq_mask_collate_fn,
        get_out_len_fn=functools.partial(
            frames_after_frontend, reduction=hparams["frontend_reduction"]
        ),
        mask_prob=hparams["mask_prob"],
        mask_length=hparams["mask_length"],
        n_mels=hparams["n_mels"],
    )
    loader_options = {}
    for name, dataset in datasets.items():
        sampler = DynamicBatchSampler(
            dataset,
            max_batch_length=hparams["max_batch_length"],
            num_buckets=hparams["num_buckets"],
            length_func=lambda item: float(item["duration"]),
            shuffle=hparams["shuffle"] and name == "train",
            batch_ordering="random" if name == "train" else "descending",
        )
        loader_options[name] = {
            "batch_sampler": sampler,
            "collate_fn": collate_fn,
            "num_workers": hparams["num_workers"],
        }
    return datasets, loader_options


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

    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["save_folder"],
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": [],
            "skip_prep": hparams["skip_prep"],
            "skip_bad_files": hparams["skip_bad_files"],
        },
    )
    run_on_main(
        merge_csvs,
        args=[[f"{hparams['save_folder']}/{s}.csv" for s in hparams["train_splits"]]],
        kwargs={"merged_csv": hparams["train_csv"]},
    )
    datasets, loader_options = dataio_prepare(hparams)

    brain = BestRQBrain(
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


if __name__ == "__main__":
    main()
