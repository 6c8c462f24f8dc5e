"""End-to-end tests of the LibriSpeech CTC recipe (BEST-RQ checkpoint -> CTC
fine-tuning -> inference folder -> transcription) and of the strict loader.

A tiny BEST-RQ model is pre-trained once per module, on the tiny corpus.
"""

import glob
import os
import subprocess
import sys

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_pom.pretrained import PretrainedMismatchError, load_bestrq_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESTRQ_FOLDER = os.path.join(
    ROOT, "recipes", "LibriSpeech", "self-supervised-learning", "BEST-RQ"
)
CTC_FOLDER = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
ENCODER_YAML = os.path.join(ROOT, "hparams", "conformer_encoder.yaml")

TINY_ENCODER = {
    "d_model": "32",
    "nhead": "2",
    "num_encoder_layers": "1",
    "d_ffn": "64",
    "kernel_size": "7",
}
RUN_OPTIONS = ["--precision", "fp32", "--num_workers", "0", "--max_batch_length", "20"]


def command_line(script, hparams_file, data_folder, output_folder, **overrides):
    """The command running a recipe with the tiny encoder and ``overrides``."""
    arguments = [sys.executable, script, hparams_file]
    arguments += ["--data_folder", data_folder, "--output_folder", output_folder]
    for key, value in {**TINY_ENCODER, **overrides}.items():
        arguments += [f"--{key}", str(value)]
    return arguments + RUN_OPTIONS


def run_recipe(folder, arguments):
    """Runs a recipe in its folder; returns the CompletedProcess."""
    return subprocess.run(
        arguments, cwd=folder, capture_output=True, text=True, timeout=600
    )


def run_ctc(data_folder, output_folder, mixer="pom", **overrides):
    """Runs the LibriSpeech CTC recipe (``hparams/ctc_bestrq_<mixer>.yaml``)
    for one epoch, tested on test-clean only."""
    overrides = {"test_splits": "[test-clean]", "number_of_epochs": 1, **overrides}
    arguments = command_line(
        "train_with_bestrq.py",
        f"hparams/ctc_bestrq_{mixer}.yaml",
        data_folder,
        output_folder,
        **overrides,
    )
    return run_recipe(CTC_FOLDER, arguments)


@pytest.fixture(scope="module")
def bestrq_save_folder(tiny_librispeech, tmp_path_factory):
    """The save folder of a tiny BEST-RQ (PoM) pre-training of one epoch."""
    output_folder = str(tmp_path_factory.mktemp("bestrq"))
    arguments = command_line(
        "train.py",
        "hparams/bestrq_pom.yaml",
        tiny_librispeech,
        output_folder,
        train_splits="[train-clean-100]",
        number_of_epochs=1,
        cb_vocab=64,
    )
    result = run_recipe(BESTRQ_FOLDER, arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(output_folder, "save")


@pytest.fixture(scope="module")
def ctc_output(tiny_librispeech, bestrq_save_folder, tmp_path_factory):
    """The output folder of a tiny CTC fine-tuning from the BEST-RQ model."""
    output_folder = str(tmp_path_factory.mktemp("ctc"))
    result = run_ctc(tiny_librispeech, output_folder, pt_model_path=bestrq_save_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_folder


def tiny_encoder(**changes):
    """CNN, wrapper and normalize of the tiny encoder, with ``changes``."""
    settings = {key: int(value) for key, value in TINY_ENCODER.items()}
    settings["mixer_options"] = {"pom": {"degree": 3, "expand": 2, "formulation": "A"}}
    settings.update(changes)
    with open(ENCODER_YAML, encoding="utf-8") as fin:
        encoder = load_hyperpyyaml(fin, settings)
    return encoder["CNN"], encoder["wrapper"], encoder["normalize"]


def test_ctc_recipe_writes_reports_and_inference_folder(ctc_output):
    for report in ("wer_test-clean.txt", "cer_test-clean.txt"):
        with open(os.path.join(ctc_output, report), encoding="utf-8") as fin:
            assert "%WER" in fin.read()
    for name in ("hyperparams.yaml", "model.ckpt", "normalize.ckpt", "tokenizer.ckpt"):
        assert os.path.isfile(os.path.join(ctc_output, "model", name))
    with open(os.path.join(ctc_output, "train_log.txt"), encoding="utf-8") as fin:
        assert "test-clean" in fin.read()


def test_inference_folder_loads_offline_and_transcribes(ctc_output, tiny_librispeech):
    from speechbrain.inference.ASR import EncoderASR

    folder = os.path.join(ctc_output, "model")
    model = EncoderASR.from_hparams(source=folder, savedir=folder)
    audio_file = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    assert isinstance(model.transcribe_file(audio_file), str)


def test_transcribe_cli_reports_unreadable_files(
    ctc_output, tiny_librispeech, tmp_path
):
    good = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    missing = str(tmp_path / "missing.flac")
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_pom.transcribe"]
        + ["--model", os.path.join(ctc_output, "model"), good, missing],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{good}\t")
    assert "missing.flac" in result.stderr


def test_ctc_recipe_fails_fast_on_missing_checkpoint(tiny_librispeech, tmp_path):
    result = run_ctc(
        tiny_librispeech, str(tmp_path / "out"), pt_model_path=tmp_path / "nowhere"
    )
    assert result.returncode != 0
    # SpeechBrain logs the uncaught exception to stdout.
    output = result.stdout + result.stderr
    assert "nowhere" in output and "is not a folder" in output
    assert not glob.glob(str(tmp_path / "out" / "save" / "CKPT+*"))


def test_ctc_recipe_fails_fast_on_other_mixer(
    tiny_librispeech, bestrq_save_folder, tmp_path
):
    result = run_ctc(
        tiny_librispeech,
        str(tmp_path / "out"),
        pt_model_path=bestrq_save_folder,
        mixer="mha",
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "PretrainedMismatchError" in output
    assert "missing keys" in output and "unexpected keys" in output


def test_strict_loader_loads_matching_checkpoint(bestrq_save_folder):
    cnn, wrapper, normalize = tiny_encoder()
    folder = load_bestrq_encoder(bestrq_save_folder, cnn, wrapper, normalize)
    state = torch.load(os.path.join(folder, "model.ckpt"), weights_only=True)
    for key, value in wrapper.state_dict().items():
        assert torch.equal(value, state[f"1.{key}"])
    # One CKPT+ folder is accepted as well as the save folder.
    assert load_bestrq_encoder(folder, cnn, wrapper, normalize) == folder


def test_strict_loader_rejects_other_shapes(bestrq_save_folder):
    cnn, wrapper, normalize = tiny_encoder(d_model=48, d_ffn=96)
    with pytest.raises(PretrainedMismatchError, match="shape mismatches"):
        load_bestrq_encoder(bestrq_save_folder, cnn, wrapper, normalize)


def test_strict_loader_rejects_folder_without_checkpoint(tmp_path):
    cnn, wrapper, normalize = tiny_encoder()
    with pytest.raises(FileNotFoundError, match="No BEST-RQ checkpoint"):
        load_bestrq_encoder(str(tmp_path), cnn, wrapper, normalize)


def test_encoder_stays_fixed_for_freeze_encoder_steps(
    tiny_librispeech, bestrq_save_folder, tmp_path
):
    # Longer than the run: only the CTC head may change.
    result = run_ctc(
        tiny_librispeech,
        str(tmp_path),
        pt_model_path=bestrq_save_folder,
        freeze_encoder_steps=10000,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cnn, wrapper, normalize = tiny_encoder()
    used = load_bestrq_encoder(bestrq_save_folder, cnn, wrapper, normalize)
    pretrained = torch.load(os.path.join(used, "model.ckpt"), weights_only=True)
    fine_tuned = torch.load(
        os.path.join(str(tmp_path), "model", "model.ckpt"), weights_only=True
    )
    encoder_keys = [key for key in fine_tuned if key.startswith(("0.", "1."))]
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(fine_tuned[key], pretrained[key]), key
