"""End-to-end tests of the LibriSpeech CTC recipe (BEST-RQ checkpoint -> CTC
fine-tuning -> inference folder -> transcription) and of the strict loader.

The tiny BEST-RQ checkpoint fine-tuned here is written once per module in
SpeechBrain's BEST-RQ layout (``model`` = [CNN, wrapper], ``normalize``,
``quantizer``, ``linear``, ``noam_scheduler``, ``counter``) by SpeechBrain's
own Checkpointer and classes, from the modules the CTC yaml builds.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from speechbrain.nnet.linear import Linear
from speechbrain.nnet.quantisers import RandomProjectionQuantizer
from speechbrain.nnet.schedulers import NoamScheduler
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from speechbrain_pom.inference.transcribe import main as transcribe_main
from speechbrain_pom.utils.parameter_transfer import (
    PretrainedMismatchError,
    load_bestrq_encoder,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESTRQ_FOLDER = os.path.join(
    ROOT, "recipes", "LibriSpeech", "self-supervised-learning", "BEST-RQ"
)
CTC_FOLDER = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")

# The BEST-RQ recipe's tiny encoder and run options (for test_streaming_recipe).
TINY_ENCODER = {
    "d_model": "32",
    "nhead": "2",
    "num_encoder_layers": "1",
    "d_ffn": "64",
    "kernel_size": "7",
}
RUN_OPTIONS = [
    "--precision", "fp32", "--max_batch_len", "20", "--train_num_buckets", "2",
    "--train_dataloader_options", "{num_workers: 0}",
    "--test_dataloader_options", "{batch_size: 2, num_workers: 0}",
    "--grad_accumulation_factor", "1", "--avoid_if_shorter_than", "0.5",
]  # fmt: skip
# The CTC recipe's tiny encoder and back-end, and its run options.
CTC_TINY = {
    "pt_model_output_dim": 32,
    "nhead": 2,
    "num_encoder_layers": 1,
    "d_ffn": 64,
    "kernel_size": 7,
    "dnn_neurons": 32,
}
CTC_RUN_OPTIONS = {
    "precision": "fp32",
    "num_workers": 0,
    "batch_size": 4,
    "test_batch_size": 4,
    "augment": False,
    "test_beam_size": 10,
}


def command_line(script, hparams_file, data_folder, output_folder, **overrides):
    """The command running the BEST-RQ recipe with the tiny encoder and
    ``overrides``."""
    arguments = [sys.executable, script, hparams_file]
    arguments += ["--data_folder", data_folder, "--output_folder", output_folder]
    for key, value in {**TINY_ENCODER, **overrides}.items():
        arguments += [f"--{key}", str(value)]
    return arguments + RUN_OPTIONS


def ctc_command_line(hparams_file, data_folder, output_folder, **overrides):
    """The command running the CTC recipe, tiny, with ``overrides``."""
    arguments = [sys.executable, "train_with_bestrq.py", hparams_file]
    arguments += ["--data_folder", data_folder, "--output_folder", output_folder]
    for key, value in {**CTC_TINY, **CTC_RUN_OPTIONS, **overrides}.items():
        arguments += [f"--{key}", str(value)]
    return arguments


def run_recipe(folder, arguments):
    """Runs a recipe in its folder; returns the CompletedProcess."""
    return subprocess.run(
        arguments, cwd=folder, capture_output=True, text=True, timeout=600
    )


def run_ctc(data_folder, output_folder, mixer="pom", **overrides):
    """Runs the LibriSpeech CTC recipe (``hparams/ctc_bestrq_<mixer>.yaml``)
    for one epoch, tested on test-clean only."""
    overrides = {
        "test_splits": "[test-clean]",
        "test_csv": "[!ref <output_folder>/test-clean.csv]",
        "number_of_epochs": 1,
        **overrides,
    }
    arguments = ctc_command_line(
        f"hparams/ctc_bestrq_{mixer}.yaml", data_folder, output_folder, **overrides
    )
    return run_recipe(CTC_FOLDER, arguments)


def file_states(folder):
    """``{path: (bytes, modification time)}`` of every file under a folder."""
    return {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def given_csvs(tiny_librispeech, librispeech_prepare, tmp_path_factory):
    """csv files prepared beforehand, for runs with ``skip_prep``: (their
    folder, their states before any run)."""
    folder = tmp_path_factory.mktemp("given_csvs")
    librispeech_prepare.prepare_librispeech(
        data_folder=tiny_librispeech,
        save_folder=str(folder),
        tr_splits=["train-clean-100"],
        dev_splits=["dev-clean"],
        te_splits=["test-clean"],
    )
    return folder, file_states(folder)


def skip_prep_overrides(given_csvs):
    """SpeechBrain's recipe-test flags: skip the preparation, read these."""
    folder, _ = given_csvs
    return {
        "skip_prep": True,
        "train_csv": folder / "train-clean-100.csv",
        "valid_csv": folder / "dev-clean.csv",
    }


def ctc_hparams(tmp_folder, **changes):
    """The tiny CTC recipe's hyperparameters (PoM), with ``changes``; built
    with its output in ``tmp_folder``."""
    overrides = {
        **CTC_TINY,
        "data_folder": str(tmp_folder),
        "output_folder": str(tmp_folder),
        "pt_model_path": None,
        **changes,
    }
    hparams_file = os.path.join(CTC_FOLDER, "hparams", "ctc_bestrq_pom.yaml")
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, overrides)


def tiny_encoder(tmp_folder, **changes):
    """CNN, enc and normalize of the tiny CTC recipe, with ``changes``."""
    hparams = ctc_hparams(tmp_folder, **changes)
    return hparams["CNN"], hparams["enc"], hparams["normalize"]


@pytest.fixture(scope="module")
def bestrq_save_folder(tmp_path_factory):
    """The save folder of a tiny BEST-RQ model in SpeechBrain's layout,
    written by SpeechBrain's Checkpointer (one checkpoint, loss 1.0)."""
    torch.manual_seed(0)
    cnn, enc, normalize = tiny_encoder(tmp_path_factory.mktemp("bestrq_modules"))
    normalize.train()
    normalize(torch.randn(2, 50, 80), torch.ones(2))  # global statistics
    save_folder = tmp_path_factory.mktemp("bestrq") / "save"
    checkpointer = Checkpointer(
        save_folder,
        {
            "model": torch.nn.ModuleList([cnn, enc]),
            "noam_scheduler": NoamScheduler(lr_initial=0.0008, n_warmup_steps=10),
            "normalize": normalize,
            "counter": EpochCounter(1),
            "quantizer": RandomProjectionQuantizer(640, 16, 64),
            "linear": Linear(input_size=32, n_neurons=64),
        },
    )
    checkpointer.save_checkpoint(meta={"loss": 1.0})
    return str(save_folder)


@pytest.fixture(scope="module")
def ctc_output(tiny_librispeech, given_csvs, bestrq_save_folder, tmp_path_factory):
    """The output folder of a tiny CTC fine-tuning from the BEST-RQ model, on
    csv files given with ``skip_prep``."""
    output_folder = str(tmp_path_factory.mktemp("ctc"))
    folder, _ = given_csvs
    # SpeechBrain's augmentation (the original and the augmented copy).
    result = run_ctc(
        tiny_librispeech,
        output_folder,
        pt_model_path=bestrq_save_folder,
        test_csv=f"[{folder / 'test-clean.csv'}]",
        augment=True,
        **skip_prep_overrides(given_csvs),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_folder


def test_ctc_recipe_writes_reports_and_inference_folder(ctc_output):
    for report in ("wer_test-clean.txt", "cer_test-clean.txt"):
        with open(os.path.join(ctc_output, report), encoding="utf-8") as fin:
            assert "%WER" in fin.read()
    for name in ("hyperparams.yaml", "model.ckpt", "normalize.ckpt", "tokenizer.ckpt"):
        assert os.path.isfile(os.path.join(ctc_output, "model", name))
    with open(os.path.join(ctc_output, "train_log.txt"), encoding="utf-8") as fin:
        assert "test-clean" in fin.read()


def test_skip_prep_reads_the_given_csvs_and_writes_none(
    given_csvs, bestrq_save_folder, ctc_output
):
    folder, states_before = given_csvs
    assert file_states(folder) == states_before
    assert not glob.glob(f"{ctc_output}/**/*.csv", recursive=True)
    # The test set is the given file, named after it.
    with open(os.path.join(ctc_output, "wer_test-clean.txt"), encoding="utf-8") as fin:
        assert len(re.findall(r"^\d+-\d+-\d+, %WER", fin.read(), re.M)) == 6


def test_inference_yaml_is_the_template_filled(ctc_output):
    yaml = YAML()
    with open(os.path.join(CTC_FOLDER, "inference", "hyperparams.yaml")) as fin:
        template = yaml.load(fin)
    with open(os.path.join(ctc_output, "model", "hyperparams.yaml")) as fin:
        text = fin.read()
    exported = yaml.load(text)
    assert list(exported) == list(template)
    assert ": !PLACEHOLDER" not in text
    assert "!include" not in text  # standalone
    assert (exported["pt_model_output_dim"], exported["num_encoder_layers"]) == (32, 1)
    assert exported["mixer"] == "pom"
    assert dict(exported["mixer_options"]["pom"]) == {
        "degree": 3,
        "expand": 2,
        "formulation": "A",
    }
    assert (exported["output_neurons_ctc"], exported["blank_index"]) == (29, 0)
    assert exported["tokenizer"].tag.value.endswith("CTCTextEncoder")


def test_inference_folder_loads_offline_and_transcribes(ctc_output, tiny_librispeech):
    from speechbrain.inference.ASR import EncoderASR

    folder = os.path.join(ctc_output, "model")
    model = EncoderASR.from_hparams(source=folder, savedir=folder)
    audio_file = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    assert isinstance(model.transcribe_file(audio_file), str)


def test_non_editable_install_imports_transcribes_and_leaves_tools_out(
    ctc_output, tiny_librispeech, tmp_path
):
    # Only what setup.py packages: no tools/, no recipes, no editable link.
    source = tmp_path / "source"
    shutil.copytree(
        os.path.join(ROOT, "speechbrain_pom"),
        source / "speechbrain_pom",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        + ["--no-build-isolation", "--target", str(site), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    shutil.rmtree(source)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c"]
        + [
            "import importlib.util, speechbrain_pom.nnet.pom as pom; "
            "print(pom.__file__); print(importlib.util.find_spec('tools'))"
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    module_file, tools_spec = where.stdout.split()
    assert module_file.startswith(str(site)) and tools_spec == "None"
    audio_file = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    transcribed = subprocess.run(
        [sys.executable, "-m", "speechbrain_pom.inference.transcribe"]
        + ["--model", os.path.join(ctc_output, "model"), audio_file],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert transcribed.returncode == 0, transcribed.stderr[-2000:]
    assert transcribed.stdout.startswith(f"{audio_file}\t")


def test_transcribe_cli_reports_unreadable_files(
    ctc_output, tiny_librispeech, tmp_path
):
    good = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    missing = str(tmp_path / "missing.flac")
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_pom.inference.transcribe"]
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
    assert result.returncode == 2
    # One line, not a traceback.
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "model.ckpt does not match" in last_line
    assert "missing keys" in last_line and "unexpected keys" in last_line
    assert not glob.glob(str(tmp_path / "out" / "save" / "CKPT+*"))


def test_strict_loader_loads_matching_checkpoint(bestrq_save_folder, tmp_path):
    cnn, wrapper, normalize = tiny_encoder(tmp_path)
    folder = load_bestrq_encoder(bestrq_save_folder, cnn, wrapper, normalize)
    state = torch.load(os.path.join(folder, "model.ckpt"), weights_only=True)
    for key, value in wrapper.state_dict().items():
        assert torch.equal(value, state[f"1.{key}"])
    # One CKPT+ folder is accepted as well as the save folder.
    assert load_bestrq_encoder(folder, cnn, wrapper, normalize) == folder


def test_strict_loader_rejects_other_shapes(bestrq_save_folder, tmp_path):
    cnn, wrapper, normalize = tiny_encoder(tmp_path, pt_model_output_dim=48)
    with pytest.raises(PretrainedMismatchError, match="shape mismatches"):
        load_bestrq_encoder(bestrq_save_folder, cnn, wrapper, normalize)


def test_strict_loader_rejects_folder_without_checkpoint(tmp_path):
    cnn, wrapper, normalize = tiny_encoder(tmp_path / "modules")
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
    (used,) = glob.glob(os.path.join(bestrq_save_folder, "CKPT+*"))
    pretrained = torch.load(os.path.join(used, "model.ckpt"), weights_only=True)
    fine_tuned = torch.load(
        os.path.join(str(tmp_path), "model", "model.ckpt"), weights_only=True
    )
    encoder_keys = [key for key in fine_tuned if key.startswith(("0.", "1."))]
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(fine_tuned[key], pretrained[key]), key


@pytest.fixture
def model_copy(ctc_output, tmp_path):
    """A copy of the exported inference folder, to damage."""
    folder = tmp_path / "model"
    shutil.copytree(os.path.join(ctc_output, "model"), folder)
    return folder


def save_other_model(model_folder, **encoder_changes):
    """Replaces model.ckpt by the weights of another model."""
    hparams = ctc_hparams(model_folder.parent / "other", **encoder_changes)
    model = torch.nn.ModuleList(
        [hparams[name] for name in ("CNN", "enc", "back_end_ffn", "ctc_lin")]
    )
    torch.save(model.state_dict(), model_folder / "model.ckpt")


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncate_lines(path):
    """Keeps the first half of the lines of a text file."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))


DAMAGES = {
    "missing model.ckpt": (
        lambda f: (f / "model.ckpt").unlink(),
        "model.ckpt is missing",
    ),
    "truncated model.ckpt": (
        lambda f: truncate(f / "model.ckpt"),
        "model.ckpt cannot be read",
    ),
    "truncated normalize.ckpt": (
        lambda f: truncate(f / "normalize.ckpt"),
        "normalize.ckpt cannot be read",
    ),
    "truncated tokenizer.ckpt": (
        lambda f: truncate(f / "tokenizer.ckpt"),
        "tokenizer.ckpt",
    ),
    "truncated hyperparams.yaml": (
        lambda f: truncate_lines(f / "hyperparams.yaml"),
        "hyperparams.yaml is incomplete",
    ),
    "another mixer": (
        lambda f: save_other_model(f, mixer="summarymixing"),
        "unexpected keys: 1.transformer.encoder.layers.0.mha_layer.",
    ),
    "another size": (
        lambda f: save_other_model(f, pt_model_output_dim=48),
        "shape mismatches",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_transcribe_refuses_a_bad_folder_in_one_line(
    model_copy, tiny_librispeech, capsys, damage
):
    make_damage, message = DAMAGES[damage]
    make_damage(model_copy)
    audio_file = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    code = transcribe_main(["--model", str(model_copy), audio_file])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    (line,) = [line for line in captured.err.splitlines() if line]
    assert line.startswith("error: ") and message in line, line


def test_inference_folder_itself_refuses_another_mixer(model_copy):
    from speechbrain.inference.ASR import EncoderASR

    save_other_model(model_copy, mixer="summarymixing")
    with pytest.raises(PretrainedMismatchError, match="missing keys.*unexpected keys"):
        EncoderASR.from_hparams(source=str(model_copy), savedir=str(model_copy))


def test_transcribe_refuses_cuda_without_gpu(ctc_output, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = transcribe_main(
        ["--model", os.path.join(ctc_output, "model"), "--device", "cuda", "a.flac"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --device cuda: no CUDA GPU is available on this machine "
        "(use --device cpu)"
    )


def test_transcribe_reports_non_finite_audio_per_file(
    ctc_output, tiny_librispeech, tmp_path, capsys
):
    good = sorted(glob.glob(f"{tiny_librispeech}/test-clean/*/*/*.flac"))[0]
    samples = np.zeros(16000, dtype=np.float32)
    samples[100] = np.nan
    bad = str(tmp_path / "nan.wav")
    soundfile.write(bad, samples, 16000, subtype="FLOAT")
    code = transcribe_main(["--model", os.path.join(ctc_output, "model"), bad, good])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith(f"{good}\t") and len(captured.out.splitlines()) == 1
    assert f"error: cannot transcribe {bad}: the audio holds non-finite samples" in (
        captured.err
    )


def test_ctc_resumes_from_previous_checkpoint_when_newest_is_truncated(
    tiny_librispeech, tmp_path
):
    first = run_ctc(
        tiny_librispeech,
        str(tmp_path),
        pt_model_path="null",
        number_of_epochs=2,
        num_checkpoints_kept=2,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    save = tmp_path / "save"
    previous, newest = sorted(
        (folder for folder in save.iterdir() if folder.name.startswith("CKPT+")),
        key=lambda folder: folder.stat().st_mtime,
    )
    model_file = newest / "model.ckpt"
    model_file.write_bytes(model_file.read_bytes()[:1000])

    result = run_ctc(
        tiny_librispeech,
        str(tmp_path),
        pt_model_path="null",
        number_of_epochs=3,
        num_checkpoints_kept=2,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr + result.stdout
    assert f"Skipping checkpoint {newest}" in log
    assert f"Loading a checkpoint from {previous}" in log
    # Epoch 2 is trained again, from the previous checkpoint, then epoch 3.
    with open(tmp_path / "train_log.txt", encoding="utf-8") as fin:
        epochs = [line.split(",")[0] for line in fin if line.startswith("epoch")]
    assert epochs == ["epoch: 1", "epoch: 2", "epoch: 2", "epoch: 3"]


def newest_checkpoint(output_folder):
    """The newest CKPT+ folder of a run."""
    return max(
        glob.glob(os.path.join(output_folder, "save", "CKPT+*")), key=os.path.getmtime
    )


def test_two_optimisers_with_their_learning_rates(ctc_output, tmp_path):
    hparams = ctc_hparams(tmp_path)
    checkpoint = newest_checkpoint(ctc_output)
    for name, module, lr in (
        ("bestrq_opt", hparams["pt_model"], 0.00005),
        ("modelopt", hparams["model"], 0.0003),
    ):
        state = torch.load(os.path.join(checkpoint, f"{name}.ckpt"), weights_only=True)
        (group,) = state["param_groups"]
        assert group["params"] == list(range(len(list(module.parameters()))))
        assert (group["lr"], group["weight_decay"]) == (lr, 0.001)
        assert state["state"], f"{name} never stepped"
    for name in ("model", "pt_model", "normalize", "scheduler_model"):
        assert os.path.isfile(os.path.join(checkpoint, f"{name}.ckpt"))
    assert os.path.isfile(os.path.join(checkpoint, "scheduler_bestrq.ckpt"))
    with open(os.path.join(ctc_output, "train_log.txt"), encoding="utf-8") as fin:
        assert "lr_model: 3.00e-04, lr_bestrq: 5.00e-05" in fin.read()


def test_weighted_layers_frozen_probe_learns_its_layer_weights(
    tiny_librispeech, given_csvs, bestrq_save_folder, tmp_path
):
    result = run_ctc(
        tiny_librispeech,
        str(tmp_path),
        pt_model_path=bestrq_save_folder,
        weighted_layers=True,
        freeze_bestrq=True,
        test_csv=f"[{given_csvs[0] / 'test-clean.csv'}]",
        **skip_prep_overrides(given_csvs),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = newest_checkpoint(str(tmp_path))
    model = torch.load(os.path.join(checkpoint, "model.ckpt"), weights_only=True)
    # [back_end_ffn, ctc_lin, layer weights]: one weight per hidden state.
    weights = model["2.weights"]
    assert weights.shape == (2,) and not torch.equal(weights, torch.zeros(2))
    # The frozen encoder is the pre-trained one.
    (pretrained_checkpoint,) = glob.glob(os.path.join(bestrq_save_folder, "CKPT+*"))
    pretrained = torch.load(
        os.path.join(pretrained_checkpoint, "model.ckpt"), weights_only=True
    )
    pt_model = torch.load(os.path.join(checkpoint, "pt_model.ckpt"), weights_only=True)
    assert pt_model.keys() == pretrained.keys()
    for key, value in pretrained.items():
        assert torch.equal(pt_model[key], value), key


def test_unknown_sorting_is_refused_before_any_work(tiny_librispeech, tmp_path):
    output_folder = tmp_path / "out"
    result = run_ctc(
        tiny_librispeech, str(output_folder), pt_model_path="null", sorting="longest"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: sorting is 'longest': give ascending, descending or random"
    )
    # Loading the yaml creates the empty checkpoint folder; nothing is written.
    assert [path for path in output_folder.rglob("*") if path.is_file()] == []
