#!/usr/bin/env python3
"""CTC fine-tuning on CommonVoice of a Conformer encoder pre-trained with
BEST-RQ (token mixer chosen in the yaml, PoM by default).

The CNN front-end, the encoder and the input statistics are loaded, strictly,
from the BEST-RQ checkpoint given by ``pt_model_path``; a linear CTC head is
trained on top, over SentencePiece tokens learnt from the training
transcripts, the encoder and the head each with its own optimiser and
learning-rate schedule. Validation uses greedy decoding, test a CTC beam
search on every ``test_csv`` file (``wer_<test set>.txt`` and
``cer_<test set>.txt`` in the output folder). Training ends by exporting an
inference folder for ``speechbrain.inference.ASR.EncoderASR``, whose
``hyperparams.yaml`` is ``inference/hyperparams.yaml`` filled in. Rows of the
tsv files that cannot be used (missing or unreadable clips, empty sentences)
are skipped by the preparation and listed in
``<save_folder>/<split>_skipped.txt``.

To run this recipe:
    python train_with_bestrq.py hparams/ctc_bestrq_pom.yaml \
        --data_folder /path/to/CommonVoice/en --language en \
        --pt_model_path /path/to/BEST-RQ/results/bestrq_pom/1000/save
From scratch (no pre-training): --pt_model_path null
On several GPUs:
    torchrun --nproc_per_node=4 train_with_bestrq.py hparams/ctc_bestrq_pom.yaml ...

Authors
* speechbrain-pom contributors 2026
"""

import os
import shutil
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio import audio_io
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.preprocess import AudioNormalizer
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_pom.export import fill_yaml_template, folder_written_whole
from speechbrain_pom.pretrained import load_bestrq_encoder, reinitialise_top_layers
from speechbrain_pom.recipe_checks import (
    OutputFolderLock,
    RecipeValueError,
    check_can_stream,
    check_csv_files,
    check_recipe_values,
)
from speechbrain_pom.tokenizers import CTCTokenizer
from speechbrain_pom.training import TimeBudgetBrain

logger = get_logger(__name__)

RECIPE_FOLDER = os.path.dirname(os.path.abspath(__file__))
# The inference folder's hyperparams.yaml, with !PLACEHOLDER values.
INFERENCE_TEMPLATE = os.path.join(RECIPE_FOLDER, "inference", "hyperparams.yaml")
# The copy of the encoder yaml that the inference hyperparams.yaml includes.
INFERENCE_ENCODER_YAML = "conformer_encoder.yaml"
# The inference folder's yaml for StreamingASR, copied as is (it includes
# hyperparams.yaml).
INFERENCE_STREAMING_YAML = "streaming_hyperparams.yaml"


class CTCBrain(TimeBudgetBrain):
    """CTC on top of the Conformer encoder, with its own optimiser and
    learning-rate schedule for the encoder and for the output layer.

    Arguments
    ---------
    tokenizer : speechbrain_pom.tokenizers.CTCTokenizer
        Turns the predicted token ids into text.
    test_searcher : speechbrain.decoders.ctc.CTCBeamSearcher
        The beam search used on the test sets.
    **kwargs : dict
        Forwarded to ``TimeBudgetBrain``.
    """

    def __init__(self, tokenizer, test_searcher, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.test_searcher = test_searcher
        self.test_set_name = "test"

    def compute_forward(self, batch, stage):
        """Token log-probabilities of a batch, from (augmented) waveforms."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(
            feats, wav_lens, epoch=self.hparams.epoch_counter.current
        )
        train_encoder = (
            stage == sb.Stage.TRAIN
            and not self.hparams.freeze_encoder
            and self.optimizer_step >= self.hparams.freeze_encoder_steps
        )
        # Dynamic Chunk Training: a chunk size and left context drawn per
        # batch (the sampler's valid_config and test_config outside training).
        dynchunktrain_config = (
            self.hparams.dynchunktrain_config_sampler(stage)
            if self.hparams.streaming
            else None
        )
        with torch.set_grad_enabled(train_encoder):
            encoded = self.modules.wrapper(
                self.modules.CNN(feats),
                wav_lens,
                dynchunktrain_config=dynchunktrain_config,
            )
        log_probs = self.hparams.log_softmax(self.modules.ctc_lin(encoded))
        return log_probs, wav_lens

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; outside training also decodes and scores WER and CER."""
        log_probs, wav_lens = predictions
        tokens, token_lens = batch.tokens
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            tokens = self.hparams.wav_augment.replicate_labels(tokens)
            token_lens = self.hparams.wav_augment.replicate_labels(token_lens)
        loss = self.hparams.ctc_cost(log_probs.float(), tokens, wav_lens, token_lens)
        if stage != sb.Stage.TRAIN:
            predicted = [
                text.split() for text in self.decode(log_probs, wav_lens, stage)
            ]
            targets = [text.split() for text in batch.wrd]
            self.wer_metric.append(batch.id, predicted, targets)
            self.cer_metric.append(batch.id, predicted, targets)
        return loss

    def decode(self, log_probs, wav_lens, stage):
        """Transcripts: greedy decoding for validation, beam search for test."""
        if stage == sb.Stage.TEST:
            # The beam search runs in Python on the CPU.
            hypotheses = self.test_searcher(log_probs.float().cpu(), wav_lens.cpu())
            return [nbest[0].text for nbest in hypotheses]
        token_ids = ctc_greedy_decode(
            log_probs, wav_lens, blank_id=self.hparams.blank_index
        )
        return [self.tokenizer.decode(ids) for ids in token_ids]

    def init_optimizers(self):
        """One optimiser for the CTC head, one for the encoder unless frozen."""
        self.optimizers_dict = {
            "head": self.hparams.head_opt_class(self.modules.ctc_lin.parameters())
        }
        self.lr_schedulers = {"head": self.hparams.lr_annealing_head}
        if not self.hparams.freeze_encoder:
            encoder_parameters = list(self.modules.CNN.parameters()) + list(
                self.modules.wrapper.parameters()
            )
            self.optimizers_dict["encoder"] = self.hparams.encoder_opt_class(
                encoder_parameters
            )
            self.lr_schedulers["encoder"] = self.hparams.lr_annealing_encoder
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(f"{name}_optimizer", optimizer)

    def on_stage_start(self, stage, epoch=None):
        """Resets the error-rate statistics."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_rate_computer()
            self.cer_metric = self.hparams.cer_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Anneals the learning rates and checkpoints after validation; writes
        the WER and CER reports after test."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = {
            "loss": stage_loss,
            "CER": self.cer_metric.summarize("error_rate"),
            "WER": self.wer_metric.summarize("error_rate"),
        }
        if stage == sb.Stage.VALID:
            learning_rates = {}
            for name, optimizer in self.optimizers_dict.items():
                _, new_lr = self.lr_schedulers[name](stage_loss)
                sb.nnet.schedulers.update_learning_rate(optimizer, new_lr)
                learning_rates[f"lr_{name}"] = new_lr
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "steps": self.optimizer_step,
                    "minutes": round(self.minutes_trained(), 2),
                    **learning_rates,
                },
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"WER": stats["WER"]},
                min_keys=["WER"],
                num_to_keep=self.hparams.num_checkpoints_kept,
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "test set": self.test_set_name,
                    "epochs trained": self.hparams.epoch_counter.current,
                },
                test_stats=stats,
            )
            for metric_name, metric in (
                ("wer", self.wer_metric),
                ("cer", self.cer_metric),
            ):
                report = os.path.join(
                    self.hparams.output_folder,
                    f"{metric_name}_{self.test_set_name}.txt",
                )
                with open(report, "w", encoding="utf-8") as fout:
                    metric.write_stats(fout)


def test_set_names(test_csvs):
    """``{test set name: csv file}``, a test set being named after its file
    (``test-clean.csv`` -> ``test-clean``), as in SpeechBrain's recipes.

    Arguments
    ---------
    test_csvs : list of str
        The test csv files.

    Returns
    -------
    dict
        The test sets by name.

    Example
    -------
    >>> test_set_names(["save/test-clean.csv", "save/test-other.csv"])
    {'test-clean': 'save/test-clean.csv', 'test-other': 'save/test-other.csv'}
    """
    named = {os.path.splitext(os.path.basename(path))[0]: path for path in test_csvs}
    if len(named) != len(test_csvs):
        raise RecipeValueError(
            f"test_csv names two files alike: {test_csvs}; their reports "
            "(wer_<name>.txt) would overwrite each other"
        )
    return named


def dataio_prepare(
    data_folder,
    train_csv,
    valid_csv,
    test_csvs,
    tokenizer,
    sample_rate,
    avoid_if_longer_than,
    max_batch_length,
    num_buckets,
    shuffle,
    num_workers,
):
    """Builds the train, valid and test datasets and their loader options.

    Arguments
    ---------
    data_folder : str
        Replaces ``$data_root`` in the csv files.
    train_csv, valid_csv : str
        The training and validation csv files.
    test_csvs : dict
        ``{test set name: csv file}``.
    tokenizer : speechbrain_pom.tokenizers.CTCTokenizer
        Encodes the transcripts.
    sample_rate : int
        Audio is resampled (and downmixed) to this rate.
    avoid_if_longer_than : float
        Training utterances longer than this (seconds) are left out.
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
        ``{"train": ..., "valid": ..., "test": {name: ...}}``.
    loader_options : dict
        Dataloader keyword arguments with the same keys.
    """
    audio_normalizer = AudioNormalizer(sample_rate=sample_rate)

    def load_csv(csv_file, max_duration=None):
        dataset = DynamicItemDataset.from_csv(
            csv_path=csv_file, replacements={"data_root": data_folder}
        )
        return dataset.filtered_sorted(
            sort_key="duration",
            key_max_value={"duration": max_duration} if max_duration else {},
        )

    datasets = {
        "train": load_csv(train_csv, avoid_if_longer_than),
        "valid": load_csv(valid_csv),
        "test": {name: load_csv(csv_file) for name, csv_file in test_csvs.items()},
    }
    all_datasets = [datasets["train"], datasets["valid"], *datasets["test"].values()]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        signal, file_sample_rate = audio_io.load(wav, channels_first=False)
        return audio_normalizer(signal, file_sample_rate)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        return torch.LongTensor(tokenizer.encode(wrd))

    sb.dataio.dataset.add_dynamic_item(all_datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(all_datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(all_datasets, ["id", "sig", "wrd", "tokens"])

    def loader(dataset, shuffled):
        sampler = DynamicBatchSampler(
            dataset,
            max_batch_length=max_batch_length,
            num_buckets=num_buckets,
            length_func=lambda item: float(item["duration"]),
            shuffle=shuffled,
            batch_ordering="random" if shuffled else "descending",
        )
        return {"batch_sampler": sampler, "num_workers": num_workers}

    loader_options = {
        "train": loader(datasets["train"], shuffle),
        "valid": loader(datasets["valid"], False),
        "test": {name: loader(data, False) for name, data in datasets["test"].items()},
    }
    return datasets, loader_options


def export_inference_folder(
    inference_folder, encoder_yaml, settings, model, normalize, tokenizer
):
    """Writes the folder that ``EncoderASR.from_hparams`` loads offline and
    ``StreamingASR.from_hparams(..., hparams_file="streaming_hyperparams.yaml")``
    chunk by chunk.

    It holds ``hyperparams.yaml`` (``inference/hyperparams.yaml`` filled in,
    including a copy of the encoder yaml so that it builds the same
    Conformer), ``streaming_hyperparams.yaml`` (a copy of
    ``inference/streaming_hyperparams.yaml``), ``model.ckpt`` (front-end,
    encoder and CTC head),
    ``normalize.ckpt`` and ``tokenizer.ckpt``; files refer to each other by
    name, so the folder can be moved. It is written beside and swapped in
    whole.

    Arguments
    ---------
    inference_folder : str
        The folder written.
    encoder_yaml : str
        The encoder yaml that the recipe includes.
    settings : dict
        The value of every placeholder of the template but ``tokenizer``.
    model : torch.nn.ModuleList
        Front-end, encoder and CTC head, in the template's order.
    normalize : speechbrain.processing.features.InputNormalization
        The input statistics.
    tokenizer : speechbrain_pom.tokenizers.CTCTokenizer
        The tokenizer used in training.
    """
    with folder_written_whole(inference_folder) as folder:
        shutil.copyfile(encoder_yaml, os.path.join(folder, INFERENCE_ENCODER_YAML))
        shutil.copyfile(
            os.path.join(RECIPE_FOLDER, "inference", INFERENCE_STREAMING_YAML),
            os.path.join(folder, INFERENCE_STREAMING_YAML),
        )
        torch.save(model.state_dict(), os.path.join(folder, "model.ckpt"))
        normalize._save(os.path.join(folder, "normalize.ckpt"))
        values = {**settings, "tokenizer": tokenizer.save(folder)}
        with open(
            os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8"
        ) as fout:
            fout.write(fill_yaml_template(INFERENCE_TEMPLATE, values))
    logger.info(f"Inference folder written to {os.path.abspath(inference_folder)}")


def main():
    """Runs the recipe: checks, data preparation, training, then test and export."""
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    try:
        check_recipe_values(
            flags={
                "skip_prep": hparams["skip_prep"],
                "augment": hparams["augment"],
                "shuffle": hparams["shuffle"],
                "freeze_encoder": hparams["freeze_encoder"],
                "streaming": hparams["streaming"],
            },
            lists={"test_csv": hparams["test_csv"]},
            non_negative_numbers={"max_train_minutes": hparams["max_train_minutes"]},
            non_negative_integers={
                "freeze_encoder_steps": hparams["freeze_encoder_steps"],
                "reinit_top_layers": hparams["reinit_top_layers"],
            },
        )
        check_can_stream(hparams["streaming"], hparams["mixer"])
        test_csvs = test_set_names(hparams["test_csv"])
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
        from common_voice_prepare import prepare_common_voice

        run_on_main(
            prepare_common_voice,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["save_folder"],
                "language": hparams["language"],
            },
        )
    try:
        check_csv_files(
            {
                "train_csv": hparams["train_csv"],
                "valid_csv": hparams["valid_csv"],
                **{f"test_csv ({name})": path for name, path in test_csvs.items()},
            }
        )
    except RecipeValueError as error:
        sys.exit(f"error: {error}")

    if hparams["pt_model_path"]:
        loaded = load_bestrq_encoder(
            hparams["pt_model_path"],
            hparams["CNN"],
            hparams["wrapper"],
            hparams["normalize"],
        )
        logger.info(f"Encoder initialised from the BEST-RQ checkpoint {loaded}")
        reinitialise_top_layers(hparams["wrapper"], hparams["reinit_top_layers"])
    else:
        logger.info("No pt_model_path: the encoder is trained from scratch.")

    tokenizer = CTCTokenizer(
        token_type=hparams["token_type"],
        output_neurons=hparams["output_neurons"],
        blank_index=hparams["blank_index"],
        model_dir=hparams["save_folder"],
        train_csv=hparams["train_csv"],
        character_coverage=hparams["character_coverage"],
    )
    datasets, loader_options = dataio_prepare(
        data_folder=hparams["data_folder"],
        train_csv=hparams["train_csv"],
        valid_csv=hparams["valid_csv"],
        test_csvs=test_csvs,
        tokenizer=tokenizer,
        sample_rate=hparams["sample_rate"],
        avoid_if_longer_than=hparams["avoid_if_longer_than"],
        max_batch_length=hparams["max_batch_length"],
        num_buckets=hparams["num_buckets"],
        shuffle=hparams["shuffle"],
        num_workers=hparams["num_workers"],
    )
    brain = CTCBrain(
        tokenizer=tokenizer,
        test_searcher=hparams["test_searcher"](
            blank_index=hparams["blank_index"], vocab_list=tokenizer.vocab_list()
        ),
        max_train_minutes=hparams["max_train_minutes"],
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=loader_options["train"],
        valid_loader_kwargs=loader_options["valid"],
    )
    for name, test_set in datasets["test"].items():
        brain.test_set_name = name
        brain.evaluate(
            test_set, min_key="WER", test_loader_kwargs=loader_options["test"][name]
        )
    if if_main_process():
        export_inference_folder(
            hparams["inference_folder"],
            encoder_yaml=os.path.join(
                os.path.dirname(os.path.abspath(hparams_file)),
                hparams["encoder_hparams_file"],
            ),
            settings={
                "sample_rate": hparams["sample_rate"],
                "blank_index": hparams["blank_index"],
                "output_neurons": hparams["output_neurons"],
                "n_mels": hparams["n_mels"],
                "d_model": hparams["d_model"],
                "nhead": hparams["nhead"],
                "num_encoder_layers": hparams["num_encoder_layers"],
                "d_ffn": hparams["d_ffn"],
                "kernel_size": hparams["kernel_size"],
                "dropout": hparams["dropout"],
                "mixer": hparams["mixer"],
                "mixer_options": hparams["mixer_options"],
            },
            model=hparams["model"],
            normalize=hparams["normalize"],
            tokenizer=tokenizer,
        )
    output_folder_lock.release()


if __name__ == "__main__":
    main()
