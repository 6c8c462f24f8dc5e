#!/usr/bin/env python3
"""BEST-RQ self-supervised pre-training of a Conformer encoder: SpeechBrain's
BEST-RQ recipe (https://arxiv.org/pdf/2405.04296) with the token mixer chosen
in the yaml (PoM, SummaryMixing, HyperMixing or SpeechBrain's attention).

Spans of filterbank frames are replaced by noise; a frozen random-projection
quantiser gives each clean encoder frame (4 stacked filterbank frames) a
codebook index, and the encoder learns to predict it at the masked frames.

To run this recipe:
    python train.py hparams/bestrq_pom.yaml --data_folder /path/to/LibriSpeech
On several GPUs (as SpeechBrain's recipe, with --find_unused_parameters):
    torchrun --nproc_per_node=4 train.py hparams/bestrq_pom.yaml \
        --data_folder /path/to/LibriSpeech --find_unused_parameters

Authors
* speechbrain-pom contributors 2026
"""

import functools
import os
import sys
import time

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio import audio_io
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.preprocess import AudioNormalizer
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.lobes.models.BESTRQ import brq_mask_collate_fn
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_pom.dataio.validation import AUDIO_CACHE_NAME
from speechbrain_pom.processing.features import normalize_finite
from speechbrain_pom.utils.recipe_checks import (
    OutputFolderLock,
    RecipeValueError,
    check_can_stream,
    check_csv_audio,
    check_csv_files,
    check_recipe_values,
    exit_on_refusal,
)
from speechbrain_pom.utils.time_budget import TimeBudgetBrain

logger = get_logger(__name__)

# SpeechBrain's checkpoints keep the 3 most recent.
CHECKPOINTS_KEPT = 3


class BestRQBrain(TimeBudgetBrain):
    """Masked prediction of random-projection codebook indices."""

    def compute_forward(self, batch, stage):
        """Masks the filterbanks, encodes them and scores every codebook entry
        at the masked encoder frames.

        Arguments
        ---------
        batch : tuple
            Waveforms, relative lengths and mask (filterbank-frame indices).
        stage : sb.Stage
            The stage.

        Returns
        -------
        logits : torch.Tensor
            (batch x masked frames, cb_vocab).
        targets : torch.Tensor
            (batch x masked frames,) codebook indices.
        """
        # Drawn first, as in SpeechBrain, so that the same seed gives the same
        # random numbers (the sampler and the noise share torch's generator).
        dynchunktrain_config = (
            self.hparams.dynchunktrain_config_sampler(stage)
            if self.hparams.streaming
            else None
        )
        wavs, wav_lens, mask = (tensor.to(self.device) for tensor in batch)
        feats = self.hparams.compute_features(wavs)
        # SpeechBrain's collate carries no utterance IDs: the warning counts them.
        feats = normalize_finite(
            self.modules.normalize,
            feats,
            wav_lens,
            epoch=self.hparams.epoch_counter.current,
        )
        augmentation = getattr(self.hparams, "augmentation", None)
        if stage == sb.Stage.TRAIN and augmentation is not None:
            feats = augmentation(feats)

        stack = self.hparams.pad_to_divisible_by
        feats = pad_feats(feats, stack)
        batch_size, num_frames, _ = feats.shape
        # Targets come from the clean frames, stacked by the front-end's stride.
        stacked = feats.view(batch_size, num_frames // stack, -1)
        targets = self.modules.Quantizer(stacked[:, encoder_frames(mask, stack)])
        masked, mask_idx = mask_features(
            feats, mask, self.hparams.noise_mean, self.hparams.noise_std, stack
        )

        encoded = self.modules.wrapper(
            self.modules.CNN(masked),
            wav_lens,
            dynchunktrain_config=dynchunktrain_config,
        )
        logits = self.modules.linear(encoded)[:, mask_idx]
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy of the codebook index at the masked frames (and, out
        of training, the accuracy of the batch)."""
        logits, targets = predictions
        if stage != sb.Stage.TRAIN and if_main_process():
            correct = logits.argmax(dim=-1) == targets
            self.accuracies.append(correct.float().mean().item())
        return F.cross_entropy(logits, targets)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Steps the Noam schedule after each optimiser step and writes a line
        of train_steps_log every log_interval steps."""
        if not should_step:
            return
        self.hparams.noam_annealing(self.optimizer)
        if self.optimizer_step % self.hparams.log_interval != 0:
            return
        stats = {
            "steps": self.optimizer_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "avg_loss": self.avg_train_loss,
        }
        now = time.time()
        if getattr(self, "time_last_log", None) is not None:
            stats["run_time"] = now - self.time_last_log
        self.time_last_log = now
        if if_main_process():
            self.hparams.train_steps_logger.log_stats(stats_meta=stats)

    def on_stage_start(self, stage, epoch=None):
        """Resets the masked-prediction accuracy."""
        self.accuracies = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the epoch and saves a checkpoint after validation."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage != sb.Stage.VALID:
            return
        if self.accuracies:
            stats["accuracy"] = sum(self.accuracies) / len(self.accuracies)
        self.hparams.train_stage_logger.log_stats(
            stats_meta={
                "epoch": epoch,
                "steps": self.optimizer_step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "minutes": round(self.minutes_trained(), 2),
            },
            train_stats=self.train_stats,
            valid_stats=stats,
        )
        self.checkpointer.save_and_keep_only(
            end_of_epoch=True,
            num_to_keep=CHECKPOINTS_KEPT,
            meta={
                "valid_loss": stage_loss,
                "epoch": epoch,
                "steps": self.optimizer_step,
                **stats,
            },
        )


def pad_feats(feats, divisible_by):
    """Pads the time axis of features with zeros to a multiple of
    ``divisible_by``, so that frames stack by the front-end's stride.

    Arguments
    ---------
    feats : torch.Tensor
        (batch, time, features).
    divisible_by : int
        The stacking factor.

    Returns
    -------
    torch.Tensor
        (batch, time rounded up to a multiple of divisible_by, features).

    Example
    -------
    >>> pad_feats(torch.ones(2, 9, 3), 4).shape
    torch.Size([2, 12, 3])
    """
    return F.pad(feats, (0, 0, 0, -feats.shape[1] % divisible_by))


def encoder_frames(mask, stack=4):
    """The encoder frames that a mask of filterbank frames covers.

    The mask's spans start at multiples of ``mask_length``, a multiple of
    ``stack``, so every ``stack``-th index starts one encoder frame.

    Arguments
    ---------
    mask : torch.Tensor
        Filterbank-frame indices, as drawn by ``brq_mask_collate_fn``.
    stack : int
        Filterbank frames per encoder frame.

    Returns
    -------
    torch.Tensor
        Encoder-frame indices (``mask[::stack] // stack``).

    Example
    -------
    >>> encoder_frames(torch.tensor([4, 5, 6, 7, 12, 13, 14, 15]))
    tensor([1, 3])
    """
    return mask[::stack] // stack


def mask_features(feats, mask, noise_mean, noise_std, stack=4):
    """Replaces the masked filterbank frames by Gaussian noise.

    Arguments
    ---------
    feats : torch.Tensor
        (batch, time, features), time a multiple of ``stack``; not modified.
    mask : torch.Tensor
        Filterbank-frame indices (the same for every utterance).
    noise_mean, noise_std : float
        Mean and standard deviation of the noise.
    stack : int
        Filterbank frames per encoder frame.

    Returns
    -------
    masked : torch.Tensor
        The features, noise at the masked frames.
    mask_idx : torch.Tensor
        The encoder frames that the mask covers.

    Example
    -------
    >>> feats, mask = torch.zeros(1, 8, 2), torch.arange(4, 8)
    >>> masked, mask_idx = mask_features(feats, mask, 5.0, 0.0)
    >>> masked[0, :, 0], mask_idx
    (tensor([0., 0., 0., 0., 5., 5., 5., 5.]), tensor([1]))
    """
    noise = torch.normal(
        mean=noise_mean,
        std=noise_std,
        size=(feats.shape[0], mask.shape[0], feats.shape[2]),
        device=feats.device,
    )
    masked = feats.clone()
    masked[:, mask] = noise.to(feats.dtype)
    return masked, encoder_frames(mask, stack)


def fbank_frames(num_samples, sample_rate=16000, hop_length=10):
    """Number of filterbank frames of an utterance (the lengths on which
    SpeechBrain's BEST-RQ draws its masks).

    Arguments
    ---------
    num_samples : torch.Tensor
        Length of the waveform in samples.
    sample_rate : int
        Sampling rate (Hz).
    hop_length : float
        Filterbank hop (ms).

    Returns
    -------
    torch.Tensor
        ``num_samples // hop + 1``, as integers.

    Example
    -------
    >>> fbank_frames(torch.tensor(16000))
    tensor(101)
    """
    return (num_samples // (sample_rate * hop_length / 1000) + 1).to(torch.long)


def mask_collate_fn(samples, get_out_len_fn, mask_prob, mask_length, n_mels):
    """SpeechBrain's ``brq_mask_collate_fn``, which first refuses, with a
    clear message, a batch whose shortest utterance cannot hold one mask.

    Arguments
    ---------
    samples : list of dict
        ``{"id": ..., "sig": ...}`` items.
    get_out_len_fn : callable
        Filterbank frames of a number of samples.
    mask_prob : float
        Probability for a frame to start a mask.
    mask_length : int
        Frames per mask.
    n_mels : int
        Filterbank channels.

    Returns
    -------
    tuple
        Padded waveforms, relative lengths and mask indices.

    Raises
    ------
    ValueError
        Naming the utterances shorter than ``mask_length`` frames.
    """
    too_short = [
        sample["id"]
        for sample in samples
        if get_out_len_fn(torch.as_tensor(sample["sig"].size(-1))) < mask_length
    ]
    if too_short:
        raise ValueError(
            f"utterance(s) {too_short} have fewer than mask_length={mask_length} "
            "filterbank frames and cannot be masked; remove them from the csv "
            "file (training: raise avoid_if_shorter_than)"
        )
    return brq_mask_collate_fn(
        samples,
        get_out_len_fn=get_out_len_fn,
        mask_prob=mask_prob,
        mask_length=mask_length,
        n_mels=n_mels,
    )


def check_maskable(datasets, hparams):
    """Refuses, before training, utterances too short to hold one mask (the
    collate function would only refuse them at their batch).

    Arguments
    ---------
    datasets : dict
        ``{name: DynamicItemDataset}`` with a ``duration`` (seconds) column.
    hparams : dict
        The recipe's hyperparameters (sample_rate, hop_length, mask_length).

    Raises
    ------
    RecipeValueError
        Naming the utterances and the dataset.
    """
    rate, hop = hparams["sample_rate"], hparams["hop_length"]

    def num_frames(row):
        num_samples = torch.tensor(round(float(row["duration"]) * rate))
        return fbank_frames(num_samples, rate, hop)

    problems = []
    for name, dataset in datasets.items():
        too_short = [
            data_id
            for data_id in dataset.data_ids
            if num_frames(dataset.data[data_id]) < hparams["mask_length"]
        ]
        if too_short:
            problems.append(f"{name}: {too_short[:5]} ({len(too_short)} in all)")
    if problems:
        raise RecipeValueError(
            f"utterances with fewer than mask_length={hparams['mask_length']} "
            f"filterbank frames cannot be masked; {'; '.join(problems)}; remove "
            "them from the csv file (training: raise avoid_if_shorter_than)"
        )


def make_collate_fn(hparams):
    """The collate function drawing the masks on filterbank frames.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters (sample_rate, hop_length, mask_prob,
        mask_length, n_mels).

    Returns
    -------
    callable
        A picklable collate function.
    """
    return functools.partial(
        mask_collate_fn,
        get_out_len_fn=functools.partial(
            fbank_frames,
            sample_rate=hparams["sample_rate"],
            hop_length=hparams["hop_length"],
        ),
        mask_prob=hparams["mask_prob"],
        mask_length=hparams["mask_length"],
        n_mels=hparams["n_mels"],
    )


def dataio_prepare(hparams):
    """The train set with its loader options, and the validation loader.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters.

    Returns
    -------
    train_data : DynamicItemDataset
        Training utterances within the duration limits.
    valid_loader : SaveableDataLoader
        Validation batches of ``test_dataloader_options["batch_size"]``.
    train_loader_kwargs : dict
        Dynamic batching and the mask collate function.

    Raises
    ------
    RecipeValueError
        If an utterance is too short to be masked.
    """
    data_folder = hparams["data_folder"]
    train_data = DynamicItemDataset.from_csv(
        csv_path=hparams["train_csv"], replacements={"data_root": data_folder}
    ).filtered_sorted(
        sort_key="duration",
        key_max_value={"duration": hparams["avoid_if_longer_than"]},
        key_min_value={"duration": hparams["avoid_if_shorter_than"]},
    )
    valid_data = DynamicItemDataset.from_csv(
        csv_path=hparams["valid_csv"], replacements={"data_root": data_folder}
    )
    datasets = [train_data, valid_data]
    # Resamples (and downmixes) audio that is not at sample_rate.
    audio_normalizer = AudioNormalizer(sample_rate=hparams["sample_rate"])

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        signal, file_sample_rate = audio_io.load(wav, channels_first=False)
        return audio_normalizer(signal, file_sample_rate)

    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig"])

    check_maskable({"train_csv": train_data, "valid_csv": valid_data}, hparams)
    collate_fn = make_collate_fn(hparams)
    pin_memory = torch.cuda.is_available()
    train_loader_kwargs = {
        "batch_sampler": DynamicBatchSampler(
            train_data,
            hparams["max_batch_len"],
            num_buckets=hparams["train_num_buckets"],
            length_func=lambda item: float(item["duration"]),
            batch_ordering="random",
            shuffle=True,
        ),
        "collate_fn": collate_fn,
        "num_workers": hparams["train_dataloader_options"]["num_workers"],
        "pin_memory": pin_memory,
    }
    valid_loader = SaveableDataLoader(
        valid_data,
        collate_fn=collate_fn,
        num_workers=hparams["test_dataloader_options"]["num_workers"],
        batch_size=hparams["test_dataloader_options"]["batch_size"],
        pin_memory=pin_memory,
    )
    return train_data, valid_loader, train_loader_kwargs


def check_values(hparams):
    """Refuses wrong values of the yaml or the command line before any work.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters.

    Raises
    ------
    RecipeValueError
        Naming each wrong value.
    """
    check_recipe_values(
        flags={
            "skip_prep": hparams["skip_prep"],
            "skip_bad_files": hparams["skip_bad_files"],
            "streaming": hparams["streaming"],
        },
        lists={
            "train_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "test_splits": hparams["test_splits"],
        },
        non_negative_numbers={"max_train_minutes": hparams["max_train_minutes"]},
    )
    check_can_stream(hparams["streaming"], hparams["mixer"])
    mask_length, stack = hparams["mask_length"], hparams["pad_to_divisible_by"]
    if not isinstance(mask_length, int) or mask_length % stack:
        # The targets are taken at mask[::stack] // stack, which names the
        # masked encoder frames only for spans of whole encoder frames.
        raise RecipeValueError(
            f"mask_length is {mask_length!r}: give a multiple of "
            f"pad_to_divisible_by ({stack}), the filterbank frames per encoder frame"
        )


def main():
    """Runs the recipe: checks, data preparation, then pre-training."""
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_values(hparams)
    sb.utils.distributed.ddp_init_group(run_opts)
    output_folder_lock = OutputFolderLock(hparams["output_folder"])
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
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "save_folder": hparams["output_folder"],
            "merge_lst": hparams["train_splits"],
            # The merged csv is written at train_csv.
            "merge_name": os.path.relpath(
                hparams["train_csv"], hparams["output_folder"]
            ),
            "skip_prep": hparams["skip_prep"],
            "skip_bad_files": hparams["skip_bad_files"],
        },
    )
    csv_files = {"train_csv": hparams["train_csv"], "valid_csv": hparams["valid_csv"]}
    check_csv_files(csv_files)
    check_csv_audio(
        csv_files,
        hparams["data_folder"],
        os.path.join(hparams["output_folder"], AUDIO_CACHE_NAME),
    )

    train_data, valid_loader, train_loader_kwargs = dataio_prepare(hparams)
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
        train_data,
        valid_loader,
        train_loader_kwargs=train_loader_kwargs,
    )
    logger.info(f"Checkpoints are in {hparams['save_folder']}")
    output_folder_lock.release()


if __name__ == "__main__":
    with exit_on_refusal():
        main()
