#!/usr/bin/env python3
"""CTC fine-tuning on LibriSpeech of a Conformer encoder pre-trained with
BEST-RQ: SpeechBrain's recipe (recipes/LibriSpeech/ASR/CTC/
train_with_bestrq.py) with the token mixer chosen in the yaml.

The CNN front-end and the encoder (``pt_model``) and the input statistics are
loaded, strictly, from the BEST-RQ checkpoint given by ``pt_model_path``; a
back-end (``back_end_ffn``, three dense layers) and a linear CTC layer
(``ctc_lin``) are trained on top. The encoder (``lr_bestrq``) and the
back-end (``lr``) each have an AdamW optimiser and a NewBob schedule on the
validation loss. Training waveforms are augmented (speed, dropped frequency
bands and chunks), validation decodes greedily and test with a CTC beam
search (optionally with a KenLM model) on every ``test_csv`` file
(``wer_<test set>.txt`` and ``cer_<test set>.txt`` in ``output_wer_folder``).
Training ends by exporting an inference folder for
``speechbrain.inference.ASR.EncoderASR``, whose ``hyperparams.yaml`` is
``inference/hyperparams.yaml`` filled in.

To run this recipe:
    python train_with_bestrq.py hparams/ctc_bestrq_pom.yaml \
        --data_folder /path/to/LibriSpeech \
        --pt_model_path /path/to/BEST-RQ/results/bestrq_pom/1000/save
From scratch (no pre-training): --pt_model_path null
On several GPUs:
    torchrun --nproc_per_node=4 train_with_bestrq.py hparams/ctc_bestrq_pom.yaml ...

Authors
* speechbrain-pom contributors 2026
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio import audio_io
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.preprocess import AudioNormalizer
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.decoders.ctc import CTCBeamSearcher
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_pom.dataio.ctc_tokenizer import CTCTokenizer
from speechbrain_pom.dataio.validation import AUDIO_CACHE_NAME
from speechbrain_pom.inference.export import (
    extend_yaml,
    fill_yaml_template,
    folder_written_whole,
)
from speechbrain_pom.lobes.models.weighted_layers import (
    WeightedLayerSum,
    output_hidden_states,
)
from speechbrain_pom.processing.features import normalize_finite
from speechbrain_pom.utils.parameter_transfer import (
    load_bestrq_encoder,
    reinitialise_top_layers,
)
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

RECIPE_FOLDER = os.path.dirname(os.path.abspath(__file__))
# The inference folder's hyperparams.yaml, with !PLACEHOLDER values.
INFERENCE_TEMPLATE = os.path.join(RECIPE_FOLDER, "inference", "hyperparams.yaml")
# The inference folder's yaml for StreamingASR, written standalone from
# hyperparams.yaml and the keys of this template that differ from it.
STREAMING_YAML = "streaming_hyperparams.yaml"
INFERENCE_STREAMING_TEMPLATE = os.path.join(RECIPE_FOLDER, "inference", STREAMING_YAML)
SORTINGS = ("ascending", "descending", "random")


class CTCBrain(TimeBudgetBrain):
    """CTC on top of the pre-trained encoder: a back-end and a CTC layer,
    with one optimiser and learning-rate schedule for the encoder and one for
    the back-end, as SpeechBrain's recipe.

    Arguments
    ---------
    tokenizer : speechbrain_pom.dataio.ctc_tokenizer.CTCTokenizer
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
        # Without an epoch, as SpeechBrain's CTC recipe: the statistics keep
        # being updated in training.
        feats = normalize_finite(self.modules.normalize, feats, wav_lens, batch.id)
        # Dynamic Chunk Training: a chunk size and left context drawn per
        # batch (the sampler's valid_config and test_config outside training).
        dynchunktrain_config = (
            self.hparams.dynchunktrain_config_sampler(stage)
            if self.hparams.streaming
            else None
        )
        # A frozen encoder still runs in training mode (dropout), as in
        # SpeechBrain; only its gradients, which no optimiser uses, are spared.
        with torch.set_grad_enabled(stage == sb.Stage.TRAIN and self.encoder_trains()):
            encoded = self.modules.enc(
                self.modules.CNN(feats),
                wav_lens,
                dynchunktrain_config=dynchunktrain_config,
            )
        if self.hparams.weighted_layers:
            _, hidden_states = encoded
            encoded = self.modules.layer_sum(hidden_states)
        logits = self.modules.ctc_lin(self.modules.back_end_ffn(encoded))
        return self.hparams.log_softmax(logits), wav_lens

    def encoder_trains(self):
        """Whether this training step updates the pre-trained encoder."""
        return (
            not self.hparams.freeze_bestrq
            and self.optimizer_step >= self.hparams.freeze_encoder_steps
        )

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
                text.split(" ") for text in self.decode(log_probs, wav_lens, stage)
            ]
            targets = [text.split(" ") for text in batch.wrd]
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
        """SpeechBrain's two AdamW optimisers: ``bestrq_opt`` for the CNN and
        the encoder (``pt_model``), ``modelopt`` for the back-end
        (``model``); both are checkpointed, the first steps unless
        ``freeze_bestrq``."""
        self.bestrq_optimizer = self.hparams.bestrq_opt_class(
            self.modules.pt_model.parameters()
        )
        self.model_optimizer = self.hparams.model_opt_class(
            self.hparams.model.parameters()
        )
        self.optimizers_dict = {"model_optimizer": self.model_optimizer}
        if not self.hparams.freeze_bestrq:
            self.optimizers_dict["bestrq_optimizer"] = self.bestrq_optimizer
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("bestrq_opt", self.bestrq_optimizer)
            self.checkpointer.add_recoverable("modelopt", self.model_optimizer)

    def freeze_optimizers(self, optimizers):
        """The back-end's optimiser alone for the first
        ``freeze_encoder_steps`` steps."""
        if self.encoder_trains():
            return optimizers
        return {"model_optimizer": self.model_optimizer}

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
            old_lr_model, new_lr_model = self.hparams.lr_annealing_model(stage_loss)
            old_lr_bestrq, new_lr_bestrq = self.hparams.lr_annealing_bestrq(stage_loss)
            sb.nnet.schedulers.update_learning_rate(self.model_optimizer, new_lr_model)
            sb.nnet.schedulers.update_learning_rate(
                self.bestrq_optimizer, new_lr_bestrq
            )
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": epoch,
                    "lr_model": old_lr_model,
                    "lr_bestrq": old_lr_bestrq,
                    "steps": self.optimizer_step,
                    "minutes": round(self.minutes_trained(), 2),
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
                    "Epoch loaded": self.hparams.epoch_counter.current,
                },
                test_stats=stats,
            )
            if if_main_process():
                os.makedirs(self.hparams.output_wer_folder, exist_ok=True)
                for metric_name, metric in (
                    ("wer", self.wer_metric),
                    ("cer", self.cer_metric),
                ):
                    report = os.path.join(
                        self.hparams.output_wer_folder,
                        f"{metric_name}_{self.test_set_name}.txt",
                    )
                    with open(report, "w", encoding="utf-8") as fout:
                        metric.write_stats(fout)


def check_sorting(sorting):
    """Refuses a ``sorting`` that SpeechBrain's recipe does not know.

    Arguments
    ---------
    sorting : str
        ascending, descending or random.

    Raises
    ------
    RecipeValueError
        For another value.

    Example
    -------
    >>> check_sorting("ascending")
    >>> check_sorting("longest")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_pom.utils.recipe_checks.RecipeValueError: sorting is 'longest': ...
    """
    if sorting not in SORTINGS:
        raise RecipeValueError(
            f"sorting is {sorting!r}: give ascending, descending or random"
        )


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


def dataio_prepare(hparams, test_csvs, tokenizer):
    """Builds the train, valid and test datasets, as SpeechBrain's recipe:
    training utterances in the order ``sorting`` gives (ascending or
    descending duration without shuffling, or as listed), validation and
    test by ascending duration.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters (data_folder, train_csv, valid_csv,
        sorting, sample_rate); ``train_dataloader_opts`` gets
        ``shuffle: False`` when sorted.
    test_csvs : dict
        ``{test set name: csv file}``.
    tokenizer : speechbrain_pom.dataio.ctc_tokenizer.CTCTokenizer
        Encodes the transcripts.

    Returns
    -------
    dict
        ``{"train": ..., "valid": ..., "test": {name: ...}}``.
    """
    audio_normalizer = AudioNormalizer(sample_rate=hparams["sample_rate"])

    def load_csv(csv_file):
        return DynamicItemDataset.from_csv(
            csv_path=csv_file, replacements={"data_root": hparams["data_folder"]}
        )

    train_data = load_csv(hparams["train_csv"])
    if hparams["sorting"] in ("ascending", "descending"):
        train_data = train_data.filtered_sorted(
            sort_key="duration", reverse=hparams["sorting"] == "descending"
        )
        # Sorted batches would be pointless if shuffled.
        hparams["train_dataloader_opts"]["shuffle"] = False
    datasets = {
        "train": train_data,
        "valid": load_csv(hparams["valid_csv"]).filtered_sorted(sort_key="duration"),
        "test": {
            name: load_csv(csv_file).filtered_sorted(sort_key="duration")
            for name, csv_file in test_csvs.items()
        },
    }
    all_datasets = [datasets["train"], datasets["valid"], *datasets["test"].values()]

    # Resampled and downmixed, so that any audio file can be read.
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
    return datasets


# The values the inference template takes from the recipe's hyperparameters.
INFERENCE_SETTINGS = (
    "sample_rate",
    "n_fft",
    "n_mels",
    "pt_model_output_dim",
    "nhead",
    "num_encoder_layers",
    "num_decoder_layers",
    "d_ffn",
    "output_neurons",
    "encoder_module",
    "kernel_size",
    "mixer",
    "mixer_options",
    "dnn_neurons",
    "output_neurons_ctc",
    "blank_index",
)


def export_inference_folder(inference_folder, hparams, tokenizer):
    """Writes the folder that ``EncoderASR.from_hparams`` loads offline and
    ``StreamingASR.from_hparams(..., hparams_file="streaming_hyperparams.yaml")``
    chunk by chunk.

    It holds ``hyperparams.yaml`` (``inference/hyperparams.yaml`` filled in:
    it builds the recipe's modules itself), ``streaming_hyperparams.yaml``
    (standalone too: ``hyperparams.yaml`` extended by
    ``inference/streaming_hyperparams.yaml``), ``model.ckpt``
    (``[CNN, enc, back_end_ffn, ctc_lin]``), ``normalize.ckpt`` and
    ``tokenizer.ckpt``; files refer to each other by name, so the folder can
    be moved. It is written beside and swapped in whole.

    Arguments
    ---------
    inference_folder : str
        The folder written.
    hparams : dict
        The recipe's hyperparameters: its modules and the values of
        ``INFERENCE_SETTINGS``.
    tokenizer : speechbrain_pom.dataio.ctc_tokenizer.CTCTokenizer
        The tokenizer used in training.
    """
    model = torch.nn.ModuleList(
        [hparams[name] for name in ("CNN", "enc", "back_end_ffn", "ctc_lin")]
    )
    with folder_written_whole(inference_folder) as folder:
        torch.save(model.state_dict(), os.path.join(folder, "model.ckpt"))
        hparams["normalize"]._save(os.path.join(folder, "normalize.ckpt"))
        values = {name: hparams[name] for name in INFERENCE_SETTINGS}
        values["tokenizer"] = tokenizer.save(folder)
        offline = fill_yaml_template(INFERENCE_TEMPLATE, values)
        streaming = extend_yaml(offline, INFERENCE_STREAMING_TEMPLATE)
        for name, text in (("hyperparams.yaml", offline), (STREAMING_YAML, streaming)):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as fout:
                fout.write(text)
    logger.info(f"Inference folder written to {os.path.abspath(inference_folder)}")


def main():
    """Runs the recipe: checks, data preparation, training, then test and export."""
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_recipe_values(
        flags={
            "skip_prep": hparams["skip_prep"],
            "skip_bad_files": hparams["skip_bad_files"],
            "augment": hparams["augment"],
            "freeze_bestrq": hparams["freeze_bestrq"],
            "weighted_layers": hparams["weighted_layers"],
            "streaming": hparams["streaming"],
        },
        lists={
            "train_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "test_splits": hparams["test_splits"],
            "test_csv": hparams["test_csv"],
        },
        non_negative_numbers={"max_train_minutes": hparams["max_train_minutes"]},
        non_negative_integers={
            "freeze_encoder_steps": hparams["freeze_encoder_steps"],
            "reinit_top_layers": hparams["reinit_top_layers"],
        },
    )
    check_sorting(hparams["sorting"])
    check_can_stream(hparams["streaming"], hparams["mixer"])
    test_csvs = test_set_names(hparams["test_csv"])
    sb.utils.distributed.ddp_init_group(run_opts)
    output_folder_lock = OutputFolderLock(hparams["output_folder"])
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
                # As SpeechBrain's recipe: the csv files in output_folder.
                "save_folder": hparams["output_folder"],
                "tr_splits": hparams["train_splits"],
                "dev_splits": hparams["dev_splits"],
                "te_splits": hparams["test_splits"],
                "merge_lst": hparams["train_splits"],
                # The merged csv is written at train_csv.
                "merge_name": os.path.relpath(
                    hparams["train_csv"], hparams["output_folder"]
                ),
                "skip_bad_files": hparams["skip_bad_files"],
                # Transcripts with a character the tokenizer lacks are named.
                "alphabet": (
                    hparams["char_alphabet"]
                    if hparams["token_type"] == "char"
                    else None
                ),
            },
        )

    csv_files = {
        "train_csv": hparams["train_csv"],
        "valid_csv": hparams["valid_csv"],
        **{f"test_csv ({name})": path for name, path in test_csvs.items()},
    }
    check_csv_files(csv_files)
    check_csv_audio(
        csv_files,
        hparams["data_folder"],
        os.path.join(hparams["output_folder"], AUDIO_CACHE_NAME),
    )

    if hparams["pt_model_path"]:
        loaded = load_bestrq_encoder(
            hparams["pt_model_path"],
            hparams["CNN"],
            hparams["enc"],
            hparams["normalize"],
        )
        logger.info(f"Encoder initialised from the BEST-RQ checkpoint {loaded}")
        reinitialise_top_layers(hparams["enc"], hparams["reinit_top_layers"])
    else:
        logger.info("No pt_model_path: the encoder is trained from scratch.")
    if hparams["weighted_layers"]:
        # The layer weights belong to the back-end (optimised with lr, saved
        # in model.ckpt).
        layer_sum = WeightedLayerSum(output_hidden_states(hparams["enc"]))
        hparams["model"].append(layer_sum)
        hparams["modules"]["layer_sum"] = layer_sum

    tokenizer = CTCTokenizer(
        token_type=hparams["token_type"],
        output_neurons=hparams["output_neurons_ctc"],
        blank_index=hparams["blank_index"],
        char_alphabet=hparams["char_alphabet"],
        model_dir=hparams["save_folder"],
        train_csv=hparams["train_csv"],
        character_coverage=hparams["character_coverage"],
    )
    datasets = dataio_prepare(hparams, test_csvs, tokenizer)
    brain = CTCBrain(
        tokenizer=tokenizer,
        test_searcher=CTCBeamSearcher(
            **hparams["test_beam_search"], vocab_list=tokenizer.vocab_list()
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
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    for name, test_set in datasets["test"].items():
        brain.test_set_name = name
        brain.evaluate(
            test_set,
            min_key="WER",
            test_loader_kwargs=hparams["test_dataloader_opts"],
        )
    if if_main_process():
        if hparams["weighted_layers"]:
            logger.warning(
                "weighted_layers: no inference folder is exported (its "
                "hyperparams.yaml reads the top layer)."
            )
        else:
            export_inference_folder(hparams["inference_folder"], hparams, tokenizer)
    output_folder_lock.release()


if __name__ == "__main__":
    with exit_on_refusal():
        main()
