"""CTC fine-tuning of a (BEST-RQ pre-trained) Conformer encoder, shared by the
LibriSpeech and CommonVoice recipes.

The recipes only prepare their csv files (``ID, duration, wav, spk_id, wrd``
with ``$data_root``) and call ``fine_tune``: tokenizer, data loading, the
Brain (two optimisers: encoder and CTC head), greedy decoding for validation,
beam search for test and the export of an inference folder loadable by
``speechbrain.inference.ASR.EncoderASR`` all live here.

Authors
* speechbrain-pom contributors 2026
"""

import os
import shutil

import speechbrain as sb
import torch
import yaml
from speechbrain.dataio import audio_io
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.dataio.preprocess import AudioNormalizer
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.tokenizers.SentencePiece import SentencePiece
from speechbrain.utils.logger import get_logger

from speechbrain_pom.pretrained import load_bestrq_encoder
from speechbrain_pom.training import TimeBudgetBrain

logger = get_logger(__name__)

SENTENCEPIECE_TYPES = ("bpe", "unigram")
INFERENCE_HPARAMS = "hyperparams.yaml"
INFERENCE_ENCODER_HPARAMS = "conformer_encoder.yaml"
# The Pretrainer fetches each loadable as <name>.ckpt: files are named so.
TOKENIZER_FILE = "tokenizer.ckpt"


class CTCTokenizer:
    """Text <-> CTC token ids, with characters or a SentencePiece model.

    Index ``blank_index`` (0) is the CTC blank: the ``<blank>`` label of the
    character encoder, the unknown piece of the SentencePiece model (as in
    SpeechBrain's CTC recipes).

    Arguments
    ---------
    hparams : dict
        Uses ``token_type`` ("char", "bpe" or "unigram"), ``output_neurons``,
        ``blank_index`` and ``save_folder``; ``char_alphabet`` for characters,
        ``train_csv`` and ``character_coverage`` for SentencePiece.
    """

    def __init__(self, hparams):
        self.token_type = hparams["token_type"]
        if self.token_type == "char":
            self.char_encoder = CTCTextEncoder()
            self.char_encoder.insert_blank(index=hparams["blank_index"])
            self.char_encoder.update_from_iterable(hparams["char_alphabet"])
            vocab_size = len(self.char_encoder)
        elif self.token_type in SENTENCEPIECE_TYPES:
            self.processor = SentencePiece(
                model_dir=hparams["save_folder"],
                vocab_size=hparams["output_neurons"],
                annotation_train=hparams["train_csv"],
                annotation_read="wrd",
                annotation_format="csv",
                model_type=self.token_type,
                character_coverage=hparams["character_coverage"],
            ).sp
            vocab_size = self.processor.vocab_size()
        else:
            raise ValueError(
                f"token_type must be char, bpe or unigram, not {self.token_type!r}"
            )
        if vocab_size != hparams["output_neurons"]:
            raise ValueError(
                f"The {self.token_type} vocabulary has {vocab_size} tokens (blank "
                f"included) but output_neurons is {hparams['output_neurons']}."
            )

    def encode(self, text):
        """Token ids (list of int) of a transcript."""
        if self.token_type == "char":
            return self.char_encoder.encode_sequence(list(text))
        return self.processor.encode_as_ids(text)

    def decode(self, token_ids):
        """Transcript (str) of a sequence of token ids."""
        if self.token_type == "char":
            return "".join(self.char_encoder.decode_ndim(token_ids))
        return self.processor.decode_ids([int(index) for index in token_ids])

    def vocab_list(self):
        """The label of every token id, for the CTC beam search."""
        if self.token_type == "char":
            labels = self.char_encoder.ind2lab
            return [labels[index] for index in range(len(labels))]
        return [
            self.processor.id_to_piece(index)
            for index in range(self.processor.vocab_size())
        ]

    def save(self, folder):
        """Writes the tokenizer into ``folder`` as ``tokenizer.ckpt``.

        Returns
        -------
        str
            The yaml (one line) that builds an empty tokenizer of the right
            class, for SpeechBrain's ``Pretrainer`` to load the file into.
        """
        tokenizer_file = os.path.join(folder, TOKENIZER_FILE)
        if self.token_type == "char":
            self.char_encoder.save(tokenizer_file)
            return "!new:speechbrain.dataio.encoder.CTCTextEncoder"
        with open(tokenizer_file, "wb") as fout:
            fout.write(self.processor.serialized_model_proto())
        return "!new:sentencepiece.SentencePieceProcessor"


class CTCBrain(TimeBudgetBrain):
    """CTC on top of the Conformer encoder, with its own optimiser and
    learning-rate schedule for the encoder and for the output layer.

    Arguments
    ---------
    tokenizer : CTCTokenizer
        Turns the predicted token ids into text.
    **kwargs : dict
        Forwarded to ``speechbrain.Brain``.
    """

    def __init__(self, tokenizer, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.test_searcher = self.hparams.test_searcher(
            blank_index=self.hparams.blank_index, vocab_list=tokenizer.vocab_list()
        )
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
        with torch.set_grad_enabled(train_encoder):
            encoded = self.modules.wrapper(self.modules.CNN(feats), wav_lens)
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
        if not self.hparams.freeze_encoder:
            encoder_parameters = list(self.modules.CNN.parameters()) + list(
                self.modules.wrapper.parameters()
            )
            self.optimizers_dict["encoder"] = self.hparams.encoder_opt_class(
                encoder_parameters
            )
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
            learning_rates = self._anneal_learning_rates(stage_loss)
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

    def _anneal_learning_rates(self, valid_loss):
        """Steps each optimiser's NewBob schedule; returns the new rates."""
        learning_rates = {}
        for name, optimizer in self.optimizers_dict.items():
            _, new_lr = getattr(self.hparams, f"lr_annealing_{name}")(valid_loss)
            sb.nnet.schedulers.update_learning_rate(optimizer, new_lr)
            learning_rates[f"lr_{name}"] = new_lr
        return learning_rates


def dataio_prepare(hparams, tokenizer, test_csvs):
    """Builds the train, valid and test datasets and their loader options.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters (``train_csv``, ``valid_csv``,
        ``data_folder``, batching options).
    tokenizer : CTCTokenizer
        Encodes the transcripts.
    test_csvs : dict
        ``{test set name: csv file}``.

    Returns
    -------
    datasets : dict
        ``{"train": ..., "valid": ..., "test": {name: ...}}``.
    loader_options : dict
        Dataloader keyword arguments with the same keys.
    """
    audio_normalizer = AudioNormalizer(sample_rate=hparams["sample_rate"])

    def load_csv(csv_file, max_duration=None):
        dataset = DynamicItemDataset.from_csv(
            csv_path=csv_file, replacements={"data_root": hparams["data_folder"]}
        )
        return dataset.filtered_sorted(
            sort_key="duration",
            key_max_value={"duration": max_duration} if max_duration else {},
        )

    datasets = {
        "train": load_csv(hparams["train_csv"], hparams["avoid_if_longer_than"]),
        "valid": load_csv(hparams["valid_csv"]),
        "test": {name: load_csv(csv_file) for name, csv_file in test_csvs.items()},
    }
    all_datasets = [datasets["train"], datasets["valid"], *datasets["test"].values()]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        signal, sample_rate = audio_io.load(wav, channels_first=False)
        return audio_normalizer(signal, sample_rate)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        return torch.LongTensor(tokenizer.encode(wrd))

    sb.dataio.dataset.add_dynamic_item(all_datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(all_datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(all_datasets, ["id", "sig", "wrd", "tokens"])

    def loader(dataset, shuffle):
        sampler = DynamicBatchSampler(
            dataset,
            max_batch_length=hparams["max_batch_length"],
            num_buckets=hparams["num_buckets"],
            length_func=lambda item: float(item["duration"]),
            shuffle=shuffle,
            batch_ordering="random" if shuffle else "descending",
        )
        return {"batch_sampler": sampler, "num_workers": hparams["num_workers"]}

    loader_options = {
        "train": loader(datasets["train"], hparams["shuffle"]),
        "valid": loader(datasets["valid"], False),
        "test": {name: loader(data, False) for name, data in datasets["test"].items()},
    }
    return datasets, loader_options


def write_inference_folder(hparams, tokenizer, encoder_hparams_file):
    """Exports the model for ``speechbrain.inference.ASR.EncoderASR``.

    The folder holds ``hyperparams.yaml`` (which includes a copy of the
    encoder yaml, so that it builds the same Conformer), the weights, the
    input statistics and the tokenizer; everything is referred to by file
    name, so the folder can be moved and is loaded offline with
    ``EncoderASR.from_hparams(source=folder, savedir=folder)``.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters, holding the trained modules.
    tokenizer : CTCTokenizer
        The tokenizer used in training.
    encoder_hparams_file : str
        The encoder yaml that the recipe includes.

    Returns
    -------
    str
        The inference folder.
    """
    final_folder = os.path.abspath(hparams["inference_folder"])
    # Written beside the final folder, then swapped in: a crash never leaves
    # a folder that mixes the files of two exports.
    folder = final_folder + ".incomplete"
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    shutil.copyfile(
        encoder_hparams_file, os.path.join(folder, INFERENCE_ENCODER_HPARAMS)
    )
    torch.save(hparams["model"].state_dict(), os.path.join(folder, "model.ckpt"))
    hparams["normalize"]._save(os.path.join(folder, "normalize.ckpt"))
    tokenizer_yaml = tokenizer.save(folder)

    # The encoder's scalar settings (d_model, mixer, ...) as the recipe ran it.
    encoder_settings = {
        key: value
        for key, value in hparams["encoder"].items()
        if value is None or isinstance(value, (bool, int, float, str, dict))
    }
    settings_yaml = yaml.safe_dump(encoder_settings, sort_keys=False)
    settings_yaml = "".join(f"    {line}\n" for line in settings_yaml.splitlines())
    with open(os.path.join(folder, INFERENCE_HPARAMS), "w", encoding="utf-8") as fout:
        fout.write(
            INFERENCE_TEMPLATE.format(
                encoder_file=INFERENCE_ENCODER_HPARAMS,
                encoder_settings=settings_yaml,
                sample_rate=hparams["sample_rate"],
                blank_index=hparams["blank_index"],
                output_neurons=hparams["output_neurons"],
                tokenizer_yaml=tokenizer_yaml,
                tokenizer_file=TOKENIZER_FILE,
            )
        )
    previous = final_folder + ".previous"
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(final_folder):
        os.rename(final_folder, previous)
    os.rename(folder, final_folder)
    shutil.rmtree(previous, ignore_errors=True)
    logger.info(f"Inference folder written to {final_folder}")
    return final_folder


INFERENCE_TEMPLATE = """\
# CTC speech recognition with a Conformer encoder (speechbrain-pom).
# Load with speechbrain.inference.ASR.EncoderASR.from_hparams(
#     source=<this folder>, savedir=<this folder>)

sample_rate: {sample_rate}
blank_index: {blank_index}
output_neurons: {output_neurons}

encoder_hparams: !include:{encoder_file}
{encoder_settings}
compute_features: !ref <encoder_hparams[compute_features]>
normalize: !ref <encoder_hparams[normalize]>
CNN: !ref <encoder_hparams[CNN]>
wrapper: !ref <encoder_hparams[wrapper]>

ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <encoder_hparams[d_model]>
    n_neurons: !ref <output_neurons>

log_softmax: !new:speechbrain.nnet.activations.Softmax
    apply_log: True

encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    compute_features: !ref <compute_features>
    normalize: !ref <normalize>
    CNN: !ref <CNN>
    wrapper: !ref <wrapper>
    ctc_lin: !ref <ctc_lin>
    log_softmax: !ref <log_softmax>

decoding_function: !name:speechbrain.decoders.ctc_greedy_decode
    blank_id: !ref <blank_index>

tokenizer: {tokenizer_yaml}

modules:
    encoder: !ref <encoder>

model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <wrapper>, !ref <ctc_lin>]

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        model: !ref <model>
        normalize: !ref <normalize>
        tokenizer: !ref <tokenizer>
    paths:
        model: model.ckpt
        normalize: normalize.ckpt
        tokenizer: {tokenizer_file}
"""


def reinitialise_top_layers(wrapper, count):
    """Draws new initial weights for the top ``count`` layers of a pre-trained
    encoder: the top of a masked-prediction model is specialised to its
    pretext task (arXiv 2107.04734). Parameters of modules without
    ``reset_parameters`` (none in the default PoM) keep their values.

    Arguments
    ---------
    wrapper : speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper
        The encoder, as built by ``hparams/conformer_encoder.yaml``.
    count : int
        How many layers, from the top; 0 changes nothing.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper
    >>> from speechbrain_pom.lobes.mixer_transformer import MixerTransformerASR
    >>> wrapper = EncoderWrapper(MixerTransformerASR(
    ...     tgt_vocab=1, input_size=16, d_model=16, nhead=2, d_ffn=32,
    ...     num_encoder_layers=2, num_decoder_layers=0,
    ...     encoder_module="conformer", normalize_before=True))
    >>> bottom, top = wrapper.transformer.encoder.layers
    >>> before = [p.clone() for p in (*bottom.parameters(), *top.parameters())]
    >>> reinitialise_top_layers(wrapper, 1)
    >>> after = [*bottom.parameters(), *top.parameters()]
    >>> n = len(list(bottom.parameters()))
    >>> all(torch.equal(a, b) for a, b in zip(before[:n], after[:n]))
    True
    >>> all(torch.equal(a, b) for a, b in zip(before[n:], after[n:]))
    False
    """
    layers = wrapper.transformer.encoder.layers
    if not 0 <= count <= len(layers):
        raise ValueError(
            f"reinit_top_layers is {count}; the encoder has {len(layers)} layers"
        )
    if count:
        logger.info(f"The top {count} encoder layer(s) start from new weights.")
    for layer in layers[len(layers) - count :]:
        for module in layer.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def fine_tune(hparams, run_opts, test_csvs, encoder_hparams_file):
    """Trains, tests and exports a CTC model from prepared csv files.

    Arguments
    ---------
    hparams : dict
        The recipe's hyperparameters; ``pt_model_path`` is a BEST-RQ save
        folder or checkpoint folder, or None to train from scratch.
    run_opts : dict
        SpeechBrain's run options (device, DDP, ...).
    test_csvs : dict
        ``{test set name: csv file}``; each gets ``wer_<name>.txt`` and
        ``cer_<name>.txt`` in the output folder.
    encoder_hparams_file : str
        The encoder yaml included by the recipe, copied to the inference folder.
    """
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

    tokenizer = CTCTokenizer(hparams)
    datasets, loader_options = dataio_prepare(hparams, tokenizer, test_csvs)
    brain = CTCBrain(
        tokenizer=tokenizer,
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
    if sb.utils.distributed.if_main_process():
        write_inference_folder(hparams, tokenizer, encoder_hparams_file)
