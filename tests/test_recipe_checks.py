"""Wrong values of the yaml or the command line are refused before any work,
and two runs cannot share an output folder (issue 9, item 6)."""

import errno
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from speechbrain_pom.utils.recipe_checks import (
    OutputFolderLock,
    RecipeValueError,
    check_csv_audio,
    check_csv_files,
    check_recipe_values,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BESTRQ_FOLDER = os.path.join(
    ROOT, "recipes", "LibriSpeech", "self-supervised-learning", "BEST-RQ"
)
CTC_FOLDER = os.path.join(ROOT, "recipes", "LibriSpeech", "ASR", "CTC")
TINY_MODEL = [
    "--d_model", "32", "--nhead", "2", "--num_encoder_layers", "1",
    "--d_ffn", "64", "--kernel_size", "7", "--precision", "fp32",
]  # fmt: skip


def files_under(folder):
    """The files (not folders) under a folder, relative to it."""
    return sorted(
        str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()
    )


def run_recipe(folder, command):
    return subprocess.run(
        [sys.executable, *command, *TINY_MODEL],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"flags": {"skip_bad_files": "no"}}, "skip_bad_files is 'no': give True"),
        (
            {"lists": {"train_splits": "train-clean-100"}},
            "train_splits is 'train-clean-100': give a list, such as [train-clean-100]",
        ),
        (
            {"non_negative_numbers": {"max_train_minutes": "ten"}},
            "max_train_minutes is 'ten': give a number >= 0",
        ),
        (
            {"non_negative_numbers": {"max_train_minutes": -1}},
            "max_train_minutes is -1: give a number >= 0",
        ),
        (
            {"non_negative_numbers": {"max_train_minutes": True}},
            "max_train_minutes is True",
        ),
        (
            {"non_negative_integers": {"reinit_top_layers": 1.5}},
            "reinit_top_layers is 1.5: give a whole number >= 0",
        ),
    ],
)
def test_wrong_values_are_refused(values, message):
    with pytest.raises(RecipeValueError, match="^" + re.escape(message)):
        check_recipe_values(**values)


def test_right_values_pass():
    check_recipe_values(
        flags={"skip_prep": True},
        lists={"train_splits": ["train-clean-100"]},
        non_negative_numbers={"max_train_minutes": 2.5},
        non_negative_integers={"reinit_top_layers": 0},
    )


def test_missing_csv_files_are_named(tmp_path):
    present = tmp_path / "train.csv"
    present.write_text("ID\n")
    with pytest.raises(RecipeValueError, match="valid_csv .*dev.csv") as error:
        check_csv_files({"train_csv": present, "valid_csv": tmp_path / "dev.csv"})
    assert "train_csv" not in str(error.value)


def test_bestrq_recipe_refuses_wrong_overrides_before_any_work(tmp_path):
    output_folder = tmp_path / "out"
    result = run_recipe(
        BESTRQ_FOLDER,
        [
            "train.py", "hparams/bestrq_pom.yaml",
            "--data_folder", str(tmp_path), "--output_folder", str(output_folder),
            "--skip_bad_files", "no", "--train_splits", "train-clean-100",
            "--max_train_minutes", "-1",
        ],
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: skip_bad_files is 'no': give True or False; train_splits is "
        "'train-clean-100': give a list, such as [train-clean-100] (quoted on the "
        "command line); max_train_minutes is -1: give a number >= 0"
    )
    # Loading the yaml creates the empty checkpoint folder; nothing is written.
    assert files_under(output_folder) == []


def test_ctc_recipe_refuses_a_test_csv_that_is_not_a_list(tmp_path):
    output_folder = tmp_path / "out"
    result = run_recipe(
        CTC_FOLDER,
        [
            "train_with_bestrq.py", "hparams/ctc_bestrq_pom.yaml",
            "--data_folder", str(tmp_path), "--output_folder", str(output_folder),
            "--pt_model_path", "null", "--test_csv", "test-clean.csv",
            "--freeze_bestrq", "yes",
        ],
    )  # fmt: skip
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: freeze_bestrq is 'yes': give True or False")
    assert "test_csv is 'test-clean.csv': give a list" in last_line
    # Loading the yaml creates the empty checkpoint folder; nothing is written.
    assert files_under(output_folder) == []


def test_second_run_into_the_same_output_folder_is_refused(tmp_path):
    lock = OutputFolderLock(tmp_path)
    result = run_recipe(
        BESTRQ_FOLDER,
        [
            "train.py", "hparams/bestrq_pom.yaml",
            "--data_folder", str(tmp_path), "--output_folder", str(tmp_path),
        ],
    )  # fmt: skip
    lock.release()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path} is the output folder of a run that is still going "
        f"(process {os.getpid()}); wait for it to end or choose another "
        "--output_folder"
    )
    # Nothing was written: no log, no copy of the yaml.
    assert files_under(tmp_path) == [".recipe.lock"]


def test_lock_of_a_killed_run_is_free_again(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from speechbrain_pom.utils.recipe_checks import OutputFolderLock\n"
            f"lock = OutputFolderLock({str(tmp_path)!r})\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RecipeValueError, match=f"process {holder.pid}"):
            OutputFolderLock(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    OutputFolderLock(tmp_path).release()


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK])
def test_a_file_system_without_locks_warns_and_goes_on(
    tmp_path, monkeypatch, caplog, code
):
    def flock_unsupported(file, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock_unsupported)
    with caplog.at_level(logging.WARNING):
        OutputFolderLock(tmp_path).release()
    assert f"Cannot lock the output folder {tmp_path}" in caplog.text


def test_csv_audio_is_checked_as_prepared_audio(tmp_path):
    """A csv file given with skip_prep: a clip with NaN samples and an empty
    one are refused before training (the first would make the input
    normalisation's statistics NaN), and named."""
    rate = 16000
    soundfile.write(tmp_path / "good.wav", np.zeros(rate), rate)
    nan_samples = np.zeros(rate, dtype=np.float32)
    nan_samples[100] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan_samples, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0), rate)
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(
        "ID,duration,wav,spk_id,wrd\n"
        + "".join(
            f"{name},1.0,$data_root/{name}.wav,1,A\n"
            for name in ("good", "nan", "empty")
        )
    )
    cache_file = tmp_path / "audio_checks.json"
    with pytest.raises(RecipeValueError) as error:
        check_csv_audio({"train_csv": csv_file}, tmp_path, cache_file)
    assert str(error.value) == (
        "2 row(s) of the csv files have audio that cannot be used (remove them "
        "or fix the files): non-finite samples (NaN or inf): train_csv: nan; "
        "empty (zero samples): train_csv: empty"
    )
    assert cache_file.is_file()  # the next run decodes nothing again
    csv_file.write_text(csv_file.read_text().split("nan,")[0])
    check_csv_audio({"train_csv": csv_file}, tmp_path, cache_file)
