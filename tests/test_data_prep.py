"""Tests of recipes/LibriSpeech/librispeech_prepare.py on the tiny corpus."""

import csv
import glob
import logging
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
from speechbrain.dataio.dataio import read_audio
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_pom.data.validation import DataPreparationError

SPLITS = ("train-clean-100", "dev-clean", "test-clean")


@pytest.fixture
def corpus_copy(tiny_librispeech, tmp_path):
    """A copy of the tiny corpus that a test may damage."""
    return shutil.copytree(tiny_librispeech, tmp_path / "LibriSpeech")


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def first_utterance(data_folder, split="train-clean-100"):
    """The first flac file and transcript file of a split."""
    flac_file = sorted(glob.glob(os.path.join(data_folder, split, "*/*/*.flac")))[0]
    speaker, chapter = os.path.basename(flac_file).split("-")[:2]
    transcript_file = os.path.join(
        os.path.dirname(flac_file), f"{speaker}-{chapter}.trans.txt"
    )
    return flac_file, transcript_file


def remove_transcript_line(transcript_file, utterance_id):
    with open(transcript_file, encoding="utf-8") as stream:
        lines = [line for line in stream if not line.startswith(utterance_id + " ")]
    with open(transcript_file, "w", encoding="utf-8") as stream:
        stream.writelines(lines)


def test_csv_rows_match_files(librispeech_prepare, tiny_librispeech, tmp_path):
    csv_files = librispeech_prepare.prepare_librispeech(tiny_librispeech, tmp_path)
    assert sorted(csv_files) == sorted(SPLITS)
    for split in SPLITS:
        transcripts = {}
        for path in glob.glob(os.path.join(tiny_librispeech, split, "*/*/*.trans.txt")):
            with open(path, encoding="utf-8") as stream:
                transcripts.update(line.strip().split(" ", 1) for line in stream)
        rows = read_csv(tmp_path / f"{split}.csv")
        assert list(rows[0]) == ["ID", "duration", "wav", "spk_id", "wrd"]
        assert sorted(row["ID"] for row in rows) == sorted(transcripts)
        for row in rows:
            assert row["wav"].startswith(f"$data_root/{split}/")
            wav = row["wav"].replace("$data_root", tiny_librispeech)
            assert os.path.basename(wav) == row["ID"] + ".flac"
            duration = read_audio(wav).shape[0] / 16000
            assert float(row["duration"]) == pytest.approx(duration, abs=1e-3)
            assert row["wrd"] == transcripts[row["ID"]]
            assert row["spk_id"] == row["ID"].split("-")[0]

    # The yaml's $data_root replacement gives readable audio paths.
    dataset = DynamicItemDataset.from_csv(
        csv_files["dev-clean"], replacements={"data_root": tiny_librispeech}
    )
    assert all(os.path.isfile(item["wav"]) for item in dataset.data.values())


def test_skips_when_up_to_date(librispeech_prepare, tiny_librispeech, tmp_path, caplog):
    csv_file = librispeech_prepare.prepare_librispeech(tiny_librispeech, tmp_path)[
        "dev-clean"
    ]
    written = os.path.getmtime(csv_file)
    with caplog.at_level(logging.INFO):
        librispeech_prepare.prepare_librispeech(tiny_librispeech, tmp_path)
    assert "up to date" in caplog.text
    assert os.path.getmtime(csv_file) == written


def test_missing_split_folder(librispeech_prepare, tiny_librispeech, tmp_path):
    with pytest.raises(DataPreparationError) as error:
        librispeech_prepare.prepare_librispeech(
            tiny_librispeech, tmp_path, te_splits=["test-other"]
        )
    message = str(error.value)
    assert os.path.join(tiny_librispeech, "test-other") in message
    assert "test-clean" in message  # lists what is there
    assert not os.listdir(tmp_path)


def damage_no_transcript(flac_file, transcript_file):
    remove_transcript_line(transcript_file, os.path.basename(flac_file)[:-5])
    return flac_file, "no transcript line"


def damage_no_audio(flac_file, transcript_file):
    os.remove(flac_file)
    return os.path.basename(flac_file)[:-5], "no audio file"


def damage_unreadable(flac_file, transcript_file):
    with open(flac_file, "wb") as stream:
        stream.write(b"this is not audio" * 100)
    return flac_file, "unreadable"


def damage_zero_bytes(flac_file, transcript_file):
    open(flac_file, "wb").close()
    return flac_file, "unreadable"


def damage_empty_audio(flac_file, transcript_file):
    # A FLAC stream needs samples to be readable: write a header-only WAV.
    sf.write(flac_file, np.zeros(0, dtype=np.int16), 16000, format="WAV")
    return flac_file, "empty (zero samples)"


def damage_8khz(flac_file, transcript_file):
    audio = read_audio(flac_file).numpy()[::2]
    sf.write(flac_file, audio, 8000, format="FLAC")
    return flac_file, "not sampled at 16000 Hz"


def damage_stereo(flac_file, transcript_file):
    audio = read_audio(flac_file).numpy()
    sf.write(flac_file, np.stack([audio, audio], axis=1), 16000, format="FLAC")
    return flac_file, "not mono"


def damage_truncated(flac_file, transcript_file):
    # The header still announces every sample: the FLAC decoder loses sync.
    with open(flac_file, "rb") as stream:
        content = stream.read()
    with open(flac_file, "wb") as stream:
        stream.write(content[: len(content) // 2])
    return flac_file, "corrupt (decoding fails part-way)"


def damage_non_finite(flac_file, transcript_file):
    # FLAC holds integers only: a float WAV under the .flac name (libsndfile
    # reads the format from the header) carries the NaN.
    audio = read_audio(flac_file).numpy()
    audio[100] = np.nan
    sf.write(flac_file, audio, 16000, format="WAV", subtype="FLOAT")
    return flac_file, "non-finite samples (NaN or inf)"


def damage_too_short(flac_file, transcript_file):
    # 0.1 s: under 0.12 s, BEST-RQ's masking would crash on this batch.
    sf.write(flac_file, read_audio(flac_file).numpy()[:1600], 16000, format="FLAC")
    return flac_file, "shorter than 0.25 s"


@pytest.mark.parametrize(
    "damage",
    [
        damage_no_transcript,
        damage_no_audio,
        damage_unreadable,
        damage_zero_bytes,
        damage_empty_audio,
        damage_8khz,
        damage_stereo,
        damage_truncated,
        damage_non_finite,
        damage_too_short,
    ],
)
def test_bad_input_names_the_file(librispeech_prepare, corpus_copy, tmp_path, damage):
    named, reason = damage(*first_utterance(corpus_copy))
    save_folder = tmp_path / "save"
    with pytest.raises(DataPreparationError) as error:
        librispeech_prepare.prepare_librispeech(corpus_copy, save_folder)
    message = str(error.value)
    assert named in message and reason in message
    assert "(1): " in message  # only the damaged utterance is reported
    assert not glob.glob(str(save_folder / "*.csv"))  # validated before writing


def test_long_problem_lists_are_shortened(librispeech_prepare, corpus_copy, tmp_path):
    for path in glob.glob(os.path.join(corpus_copy, "train-clean-100/*/*/*.trans.txt")):
        os.remove(path)
    with pytest.raises(DataPreparationError, match=r"\(24\): .*\(14 more\)"):
        librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path)


def test_skip_bad_files(librispeech_prepare, corpus_copy, tmp_path, caplog):
    flac_file, transcript_file = first_utterance(corpus_copy)
    damage_unreadable(flac_file, transcript_file)
    other_flac, other_transcripts = first_utterance(corpus_copy, "dev-clean")
    damage_no_transcript(other_flac, other_transcripts)
    with caplog.at_level(logging.WARNING):
        csv_files = librispeech_prepare.prepare_librispeech(
            corpus_copy, tmp_path, skip_bad_files=True
        )
    assert "Skipping 2 bad utterance(s)" in caplog.text
    assert flac_file in caplog.text
    train_ids = {row["ID"] for row in read_csv(csv_files["train-clean-100"])}
    dev_ids = {row["ID"] for row in read_csv(csv_files["dev-clean"])}
    assert len(train_ids) == 23 and len(dev_ids) == 5
    assert os.path.basename(flac_file)[:-5] not in train_ids
    assert os.path.basename(other_flac)[:-5] not in dev_ids


def test_importable_through_recipe_symlink(tmp_path, monkeypatch, tiny_librispeech):
    # Recipe folders hold a symlink to the shared preparation script.
    recipe_folder = tmp_path / "recipe"
    recipe_folder.mkdir()
    target = os.path.join(
        os.path.dirname(os.path.dirname(__file__)),
        "recipes",
        "LibriSpeech",
        "librispeech_prepare.py",
    )
    os.symlink(target, recipe_folder / "librispeech_prepare.py")
    monkeypatch.syspath_prepend(str(recipe_folder))
    # Restored by monkeypatch: the module does not outlive the test.
    monkeypatch.delitem(sys.modules, "librispeech_prepare", raising=False)
    from librispeech_prepare import prepare_librispeech

    csv_files = prepare_librispeech(tiny_librispeech, tmp_path / "save")
    assert os.path.isfile(csv_files["test-clean"])
