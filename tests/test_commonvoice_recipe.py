"""End-to-end test of the CommonVoice CTC recipe on the tiny CommonVoice-layout
corpus (from scratch, SentencePiece tokens), including a bad tsv row."""

import os
import shutil
import subprocess
import sys

from test_ctc_recipe import CTC_RUN_OPTIONS, CTC_TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_FOLDER = os.path.join(ROOT, "recipes", "CommonVoice", "ASR", "CTC")


def run_recipe(overrides):
    """Runs the CommonVoice CTC recipe with ``overrides``; the CompletedProcess."""
    arguments = [sys.executable, "train_with_bestrq.py", "hparams/ctc_bestrq_pom.yaml"]
    for key, value in overrides.items():
        arguments += [f"--{key}", str(value)]
    return subprocess.run(
        arguments, cwd=RECIPE_FOLDER, capture_output=True, text=True, timeout=600
    )


def test_commonvoice_recipe_runs_end_to_end(tiny_commonvoice, tmp_path):
    # A copy of the corpus whose train.tsv names a clip that does not exist.
    data_folder = tmp_path / "en"
    shutil.copytree(tiny_commonvoice, data_folder, symlinks=True)
    with open(data_folder / "train.tsv", encoding="utf-8") as fin:
        header, first_row = fin.readline(), fin.readline()
    columns = header.rstrip("\n").split("\t")
    bad_row = first_row.rstrip("\n").split("\t")
    bad_row[columns.index("path")] = "common_voice_en_missing.mp3"
    with open(data_folder / "train.tsv", "a", encoding="utf-8") as fout:
        fout.write("\t".join(bad_row) + "\n")

    output_folder = tmp_path / "out"
    overrides = {
        "data_folder": data_folder,
        "output_folder": output_folder,
        "pt_model_path": "null",
        "token_type": "unigram",
        "output_neurons_ctc": 40,
        "number_of_epochs": 1,
        **CTC_TINY,
        **CTC_RUN_OPTIONS,
    }
    result = run_recipe(overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output_folder / "wer_test.txt", encoding="utf-8") as fin:
        assert "%WER" in fin.read()
    with open(output_folder / "save" / "train_skipped.txt", encoding="utf-8") as fin:
        assert "common_voice_en_missing" in fin.read()
    assert (output_folder / "model" / "tokenizer.ckpt").is_file()

    # SpeechBrain's recipe-test flags: the given csv files are read as they
    # are and no csv is written.
    given = tmp_path / "given"
    given.mkdir()
    for name in ("train.csv", "dev.csv", "test.csv"):
        shutil.copy(output_folder / "save" / name, given / name)
    before = {path.name: path.read_bytes() for path in given.iterdir()}
    again = tmp_path / "again"
    result = run_recipe(
        {
            **overrides,
            "output_folder": again,
            "skip_prep": True,
            "train_csv": given / "train.csv",
            "valid_csv": given / "dev.csv",
            "test_csv": f"[{given / 'test.csv'}]",
        }
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {path.name: path.read_bytes() for path in given.iterdir()} == before
    assert not list(again.rglob("*.csv"))
    with open(again / "wer_test.txt", encoding="utf-8") as fin:
        assert "%WER" in fin.read()
