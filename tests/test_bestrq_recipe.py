"""End-to-end tests of the BEST-RQ pre-training recipe on the tiny corpus."""

import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
import torch

RECIPE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(__file__)),
    "recipes/LibriSpeech/self-supervised-learning/BEST-RQ",
)
TINY_MODEL = [
    "--train_splits", "[train-clean-100]",
    "--d_model", "32", "--nhead", "2", "--num_encoder_layers", "1",
    "--d_ffn", "64", "--kernel_size", "7", "--cb_vocab", "64",
    "--precision", "fp32", "--max_batch_len", "20", "--train_num_buckets", "2",
    "--train_dataloader_options", "{num_workers: 0}",
    "--test_dataloader_options", "{batch_size: 2, num_workers: 0}",
    "--grad_accumulation_factor", "1", "--avoid_if_shorter_than", "0.5",
    "--n_warmup_steps", "4", "--lr", "0.003",
]  # fmt: skip
# SpeechBrain's recoverables: model = [CNN, wrapper], the rest apart (the
# last three are added by SpeechBrain's Brain).
SPEECHBRAIN_CHECKPOINT_FILES = {
    "model.ckpt", "quantizer.ckpt", "linear.ckpt", "noam_scheduler.ckpt",
    "normalize.ckpt", "counter.ckpt", "CKPT.yaml",
    "optimizer.ckpt", "brain.ckpt", "dataloader-TRAIN.ckpt",
}  # fmt: skip


def run_recipe(data_folder, output_folder, *extra, launcher=(sys.executable,)):
    """Runs train.py from the recipe folder, as a user would."""
    command = [*launcher, "train.py", "hparams/bestrq_pom.yaml"]
    command += [
        "--data_folder",
        str(data_folder),
        "--output_folder",
        str(output_folder),
    ]
    return subprocess.run(
        command + TINY_MODEL + list(extra),
        cwd=RECIPE_DIR,
        capture_output=True,
        text=True,
        timeout=900,
    )


def logged_epochs(output_folder):
    """(epoch, train loss) for each line of the recipe's train_stage_log.txt."""
    with open(os.path.join(output_folder, "train_stage_log.txt")) as log:
        return [
            (int(m.group(1)), float(m.group(2)))
            for m in re.finditer(r"epoch: (\d+),.*?train loss: ([\d.e+-]+)", log.read())
        ]


def checkpoints(output_folder):
    save = os.path.join(output_folder, "save")
    return sorted(d for d in os.listdir(save) if d.startswith("CKPT+"))


@pytest.fixture(scope="module")
def pretrained(tiny_librispeech, tmp_path_factory):
    """A 6-epoch tiny pre-training run: (output folder, completed process)."""
    output = tmp_path_factory.mktemp("bestrq")
    result = run_recipe(tiny_librispeech, output, "--number_of_epochs", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result


def test_writes_speechbrain_checkpoint_layout_and_csvs(pretrained):
    output, _ = pretrained
    # SpeechBrain keeps the 3 most recent checkpoints.
    assert len(checkpoints(output)) == 3
    latest = os.path.join(output, "save", checkpoints(output)[-1])
    assert set(os.listdir(latest)) == SPEECHBRAIN_CHECKPOINT_FILES
    model = torch.load(os.path.join(latest, "model.ckpt"), map_location="cpu")
    assert model and all(key.startswith(("0.", "1.")) for key in model), list(model)
    assert any(key.startswith("1.transformer.encoder.") for key in model)
    meta = (output / "save" / checkpoints(output)[-1] / "CKPT.yaml").read_text()
    for key in ("valid_loss", "epoch", "steps", "loss", "accuracy"):
        assert f"{key}:" in meta, meta
    with open(os.path.join(output, "train.csv")) as csv:
        assert csv.readline().strip() == "ID,duration,wav,spk_id,wrd"
        assert len(csv.readlines()) == 24


def test_masked_prediction_loss_goes_down(pretrained):
    output, _ = pretrained
    losses = [loss for _, loss in logged_epochs(output)]
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.1, losses


def test_resumes_from_checkpoint(pretrained, tiny_librispeech, tmp_path):
    output, _ = pretrained
    resumed = tmp_path / "resumed"
    shutil.copytree(output, resumed)
    result = run_recipe(tiny_librispeech, resumed, "--number_of_epochs", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading a checkpoint" in result.stderr + result.stdout
    epochs = [epoch for epoch, _ in logged_epochs(resumed)]
    # Epochs 1-6 come from the first run; only epoch 7 is trained again.
    assert epochs == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("damage", ["truncated", "meta_only"])
def test_resumes_from_previous_checkpoint_when_newest_is_broken(
    pretrained, tiny_librispeech, tmp_path, damage
):
    output, _ = pretrained
    resumed = tmp_path / "resumed"
    shutil.copytree(output, resumed)
    previous, newest = checkpoints(resumed)[-2:]
    model_file = resumed / "save" / newest / "model.ckpt"
    if damage == "truncated":
        model_file.write_bytes(model_file.read_bytes()[:1000])
    else:  # what SpeechBrain's own Checkpointer leaves when killed mid-save
        for name in os.listdir(resumed / "save" / newest):
            if name != "CKPT.yaml":
                os.remove(resumed / "save" / newest / name)
    # The epochs done when the previous checkpoint was saved (the run below
    # replaces the old checkpoints).
    done = int((resumed / "save" / previous / "counter.ckpt").read_text())
    result = run_recipe(tiny_librispeech, resumed, "--number_of_epochs", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr + result.stdout
    assert f"Skipping checkpoint {resumed / 'save' / newest}" in log
    assert f"Loading a checkpoint from {resumed / 'save' / previous}" in log
    # Training goes on from the epoch of the previous checkpoint.
    assert [epoch for epoch, _ in logged_epochs(resumed)][6:] == list(
        range(done + 1, 8)
    )


def test_rerun_with_another_mixer_stops_and_keeps_checkpoints(
    tiny_librispeech, tmp_path
):
    first = run_recipe(tiny_librispeech, tmp_path, "--number_of_epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    save = tmp_path / "save"
    before = {path: path.read_bytes() for path in save.rglob("*") if path.is_file()}

    result = run_recipe(
        tiny_librispeech,
        tmp_path,
        "--number_of_epochs",
        "2",
        "--mixer",
        "summarymixing",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (checkpoint,) = checkpoints(tmp_path)
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: the checkpoint {save / checkpoint} ")
    assert "model.ckpt does not match the model of this run" in last_line
    assert "missing keys: 1.transformer.encoder.layers.0." in last_line
    # Nothing trained, nothing deleted or rewritten.
    assert [epoch for epoch, _ in logged_epochs(tmp_path)] == [1]
    after = {path: path.read_bytes() for path in save.rglob("*") if path.is_file()}
    assert after == before


def test_sigkill_mid_training_then_same_command_resumes(tiny_librispeech, tmp_path):
    command = [sys.executable, "train.py", "hparams/bestrq_pom.yaml"]
    command += ["--data_folder", str(tiny_librispeech), "--output_folder"]
    command += [str(tmp_path), *TINY_MODEL, "--number_of_epochs", "6"]
    process = subprocess.Popen(
        command, cwd=RECIPE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    save = tmp_path / "save"
    # Killed as soon as the first checkpoint is there: often while it saves
    # the second one.
    deadline = time.time() + 600
    while not (save.is_dir() and checkpoints(tmp_path)) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoints(tmp_path), "no checkpoint before the kill"

    result = run_recipe(tiny_librispeech, tmp_path, "--number_of_epochs", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading a checkpoint" in result.stderr + result.stdout
    assert [epoch for epoch, _ in logged_epochs(tmp_path)][-1] == 6


def test_two_process_ddp_on_cpu(tiny_librispeech, tmp_path):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2")
    result = run_recipe(
        tiny_librispeech,
        tmp_path,
        "--number_of_epochs", "1", "--distributed_backend", "gloo",
        launcher=launcher,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(checkpoints(tmp_path)) == 1
    assert [epoch for epoch, _ in logged_epochs(tmp_path)] == [1]


def test_missing_data_folder_fails_early(tmp_path):
    result = run_recipe(
        tmp_path / "no_such_corpus", tmp_path / "out", "--number_of_epochs", "1"
    )
    assert result.returncode != 0
    assert "no_such_corpus" in result.stdout + result.stderr


def test_unknown_mixer_lists_valid_ones(tiny_librispeech, tmp_path):
    result = run_recipe(tiny_librispeech, tmp_path, "--mixer", "attention_free")
    assert result.returncode != 0
    assert "Unknown mixer 'attention_free'" in result.stdout + result.stderr
    assert "RelPosMHAXL" in result.stdout + result.stderr


def test_recipes_differ_only_in_mixer():
    def read(name):
        with open(os.path.join(RECIPE_DIR, "hparams", name)) as yaml:
            return yaml.read().splitlines()

    changed = [
        line[1:]
        for line in difflib.unified_diff(
            read("bestrq_pom.yaml"), read("bestrq_mha.yaml"), n=0
        )
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed, "the two recipes should differ in their mixer"
    for line in changed:
        assert line.startswith(
            ("#", "mixer", "    degree", "    expand", "    formulation")
        ), line


def test_hypermixing_cannot_stream(tiny_librispeech, tmp_path):
    result = run_recipe(tiny_librispeech, tmp_path, "--mixer", "hypermixing")
    assert result.returncode != 0
    assert "streaming is True but mixer 'hypermixing'" in result.stderr
    assert not (tmp_path / "train.csv").exists()


def test_mask_length_must_cover_whole_encoder_frames(tiny_librispeech, tmp_path):
    result = run_recipe(tiny_librispeech, tmp_path, "--mask_length", "6")
    assert result.returncode != 0
    assert "mask_length is 6: give a multiple of pad_to_divisible_by" in result.stderr


def test_too_short_validation_utterance_is_named(tiny_librispeech, tmp_path):
    # A valid csv whose first utterance lasts 20 ms (3 filterbank frames).
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.zeros(320), 16000)
    valid_csv = tmp_path / "valid.csv"
    valid_csv.write_text(f"ID,duration,wav,spk_id,wrd\nclip,0.02,{clip},1,A\n")
    result = run_recipe(
        tiny_librispeech, tmp_path / "out", "--number_of_epochs", "1",
        "--valid_csv", str(valid_csv), "--optimizer_step_limit", "1",
    )  # fmt: skip
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "fewer than mask_length=4 filterbank frames" in output
    assert "valid_csv: ['clip'] (1 in all)" in output
    assert not (tmp_path / "out" / "train_stage_log.txt").exists()  # no training
