"""Streaming end to end: BEST-RQ and CTC fine-tuning with ``streaming: True``
(Dynamic Chunk Training) on the tiny corpus, then the exported folder
transcribed chunk by chunk (``transcribe --streaming`` and SpeechBrain's
``StreamingASR``).

One tiny BEST-RQ pre-training and one CTC fine-tuning run per module.
"""

import glob
import os
import shutil

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.inference.ASR import EncoderASR, StreamingASR
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from test_ctc_recipe import (
    BESTRQ_FOLDER,
    CTC_FOLDER,
    command_line,
    ctc_command_line,
    run_ctc,
    run_recipe,
    skip_prep_overrides,
)

from speechbrain_pom.inference.transcribe import load_model
from speechbrain_pom.inference.transcribe import main as transcribe_main

STREAMING = {"streaming": True}


@pytest.fixture(scope="module")
def given_csvs(tiny_librispeech, librispeech_prepare, tmp_path_factory):
    """csv files prepared once, for runs with ``skip_prep``."""
    folder = tmp_path_factory.mktemp("given_csvs")
    librispeech_prepare.prepare_librispeech(
        data_folder=tiny_librispeech,
        save_folder=str(folder),
        tr_splits=["train-clean-100"],
        dev_splits=["dev-clean"],
        te_splits=["test-clean"],
    )
    return folder, None  # the shape skip_prep_overrides takes


@pytest.fixture(scope="module")
def streaming_bestrq(tiny_librispeech, given_csvs, tmp_path_factory):
    """The output folder of one epoch of tiny BEST-RQ with streaming: True."""
    output_folder = str(tmp_path_factory.mktemp("bestrq_streaming"))
    arguments = command_line(
        "train.py",
        "hparams/bestrq_pom.yaml",
        tiny_librispeech,
        output_folder,
        number_of_epochs=1,
        cb_vocab=64,
        **STREAMING,
        **skip_prep_overrides(given_csvs),
    )
    result = run_recipe(BESTRQ_FOLDER, arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_folder


@pytest.fixture(scope="module")
def streaming_ctc(tiny_librispeech, given_csvs, streaming_bestrq, tmp_path_factory):
    """The output folder of one epoch of tiny CTC fine-tuning with
    streaming: True, from the streaming BEST-RQ model."""
    output_folder = str(tmp_path_factory.mktemp("ctc_streaming"))
    folder, _ = given_csvs
    result = run_ctc(
        tiny_librispeech,
        output_folder,
        pt_model_path=os.path.join(streaming_bestrq, "save"),
        test_csv=f"[{folder / 'test-clean.csv'}]",
        **STREAMING,
        **skip_prep_overrides(given_csvs),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_folder


def logged_valid_losses(output_folder, log_name):
    """The validation losses of a recipe's per-epoch log."""
    with open(os.path.join(output_folder, log_name), encoding="utf-8") as fin:
        return [
            float(line.split("valid loss: ")[1].split(",")[0])
            for line in fin
            if "valid loss: " in line
        ]


def test_streaming_recipes_train_validate_and_export(streaming_bestrq, streaming_ctc):
    # Validation ran chunked (the sampler's valid_config) and gave a number.
    for output_folder, log_name in (
        (streaming_bestrq, "train_stage_log.txt"),
        (streaming_ctc, "train_log.txt"),
    ):
        (loss,) = logged_valid_losses(output_folder, log_name)
        assert loss == loss and loss > 0
    assert os.path.isfile(os.path.join(streaming_ctc, "wer_test-clean.txt"))


@pytest.mark.parametrize(
    "recipe_folder, script, hparams_file, recipe_overrides",
    [
        (BESTRQ_FOLDER, "train.py", "hparams/bestrq_pom.yaml", {}),
        (
            CTC_FOLDER,
            "train_with_bestrq.py",
            "hparams/ctc_bestrq_pom.yaml",
            {"pt_model_path": "null"},
        ),
    ],
    ids=["bestrq", "ctc"],
)
def test_hypermixing_refuses_to_stream_before_any_work(
    recipe_folder, script, hparams_file, recipe_overrides, tiny_librispeech, tmp_path
):
    output_folder = tmp_path / "out"
    overrides = {"mixer": "hypermixing", **recipe_overrides, **STREAMING}
    if recipe_folder == CTC_FOLDER:
        arguments = ctc_command_line(
            hparams_file, tiny_librispeech, str(output_folder), **overrides
        )
    else:
        arguments = command_line(
            script, hparams_file, tiny_librispeech, str(output_folder), **overrides
        )
    result = run_recipe(recipe_folder, arguments)
    assert result.returncode != 0
    assert "mixer 'hypermixing' cannot train with chunks or stream" in result.stderr
    assert not list(output_folder.glob("**/CKPT+*"))


@pytest.fixture(scope="module")
def talkative_model(streaming_ctc, tmp_path_factory):
    """A copy of the streaming inference folder whose CTC head is random, so
    that every chunk emits labels: one epoch on the tiny corpus may leave a
    head that emits only blanks, and equal empty transcripts prove nothing.
    The encoder is the one trained with chunks."""
    folder = tmp_path_factory.mktemp("talkative") / "model"
    shutil.copytree(os.path.join(streaming_ctc, "model"), folder)
    weights = torch.load(folder / "model.ckpt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    # model.ckpt: [CNN, enc, back_end_ffn, ctc_lin].
    weights["3.w.weight"] = torch.randn(
        weights["3.w.weight"].shape, generator=generator
    )
    weights["3.w.bias"].zero_()
    torch.save(weights, folder / "model.ckpt")
    return str(folder)


def offline_chunked_transcript(model, audio_file, config):
    """Greedy transcript of the whole file, encoded at once with ``config``'s
    chunks (the training-time computation)."""
    hparams = model.hparams
    audio = model.load_audio(audio_file)[None]
    whole = torch.ones(1)
    with torch.no_grad():
        features = hparams.normalize(hparams.compute_features(audio), whole)
        encoded = hparams.enc(hparams.CNN(features), whole, dynchunktrain_config=config)
        (token_ids,) = ctc_greedy_decode(
            hparams.ctc_lin(hparams.back_end_ffn(encoded)),
            whole,
            blank_id=hparams.blank_index,
        )
    return "".join(model.tokenizer.decode_ndim(token_ids))


@pytest.fixture(scope="module")
def recorded_audio_file(tiny_librispeech, tmp_path_factory):
    """A test utterance with a noise floor, as recordings have. Fbank floors
    its dB values at 80 dB below the loudest value of the whole utterance,
    which a stream cannot know yet; the synthetic corpus has digital silence
    (a range over 80 dB), so that floor would differ between the stream and
    the whole. With noise the range stays within 80 dB and the streamed
    front-end is exact."""
    clean = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    audio, sample_rate = soundfile.read(clean, dtype="float32")
    noise = np.random.default_rng(0).normal(0.0, 0.01, audio.shape)
    path = tmp_path_factory.mktemp("recorded") / "utterance.flac"
    soundfile.write(path, (audio + noise).astype("float32"), sample_rate)
    return str(path)


@pytest.mark.parametrize("chunk_size, left_chunks", [(4, None), (3, 2)])
def test_streamed_transcript_equals_offline_chunked_transcript(
    talkative_model, recorded_audio_file, chunk_size, left_chunks, capsys
):
    config = DynChunkTrainConfig(chunk_size, left_chunks)
    model = load_model(talkative_model)
    expected = offline_chunked_transcript(model, recorded_audio_file, config)
    assert len(expected) > 20
    capsys.readouterr()
    exit_code = transcribe_main(
        ["--model", talkative_model, "--streaming", "--chunk-size", str(chunk_size)]
        + ["--left-chunks", str(left_chunks).lower(), recorded_audio_file]
    )
    assert exit_code == 0
    assert capsys.readouterr().out == f"{recorded_audio_file}\t{expected}\n"


def hub_copy(folder, hparams_file, destination):
    """What ``from_hparams`` fetches from a model hub: the yaml file it is
    given, then the files of its pretrainer's ``paths``; nothing else."""
    os.makedirs(destination)
    for name in (hparams_file, "model.ckpt", "normalize.ckpt", "tokenizer.ckpt"):
        shutil.copy(os.path.join(folder, name), destination)
    return str(destination)


def test_each_yaml_of_the_folder_loads_without_the_others(
    streaming_ctc, tiny_librispeech, tmp_path
):
    folder = os.path.join(streaming_ctc, "model")
    audio_file = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    offline_source = hub_copy(folder, "hyperparams.yaml", tmp_path / "offline")
    offline = EncoderASR.from_hparams(
        source=offline_source, savedir=str(tmp_path / "offline_saved")
    )
    assert isinstance(offline.transcribe_file(audio_file), str)
    streaming_source = hub_copy(
        folder, "streaming_hyperparams.yaml", tmp_path / "streaming"
    )
    streaming = StreamingASR.from_hparams(
        source=streaming_source,
        savedir=str(tmp_path / "streaming_saved"),
        hparams_file="streaming_hyperparams.yaml",
    )
    config = DynChunkTrainConfig(8, None)
    transcript = streaming.transcribe_file(
        audio_file, config, use_torchaudio_streaming=False
    )
    assert isinstance(transcript, str)


def test_streaming_asr_loads_the_folder_and_transcribes(
    streaming_ctc, tiny_librispeech
):
    folder = os.path.join(streaming_ctc, "model")
    asr = StreamingASR.from_hparams(
        source=folder, savedir=folder, hparams_file="streaming_hyperparams.yaml"
    )
    config = DynChunkTrainConfig(8, None)
    # Each chunk of audio gives one chunk of encoder frames, as in training.
    context = asr.make_streaming_context(config)
    chunk = torch.rand(1, asr.get_chunk_size_frames(config))
    assert asr.encode_chunk(context, chunk).shape == (1, 8, 29)
    audio_file = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    transcript = asr.transcribe_file(audio_file, config, use_torchaudio_streaming=False)
    assert isinstance(transcript, str)
