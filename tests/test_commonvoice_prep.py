"""Tests of recipes/CommonVoice/common_voice_prepare.py on the tiny corpus."""

import csv
import glob
import logging
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechbrain_pom.dataio import validation
from speechbrain_pom.dataio.validation import DataPreparationError

SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}


def read_table(path, delimiter=","):
    with open(path, encoding="utf-8", newline="") as stream:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        return list(csv.DictReader(stream, delimiter=delimiter, quoting=quoting))


def librispeech_transcripts(librispeech_root, split):
    transcripts = set()
    for path in glob.glob(os.path.join(librispeech_root, split, "*/*/*.trans.txt")):
        with open(path, encoding="utf-8") as stream:
            transcripts.update(line.strip().split(" ", 1)[1] for line in stream)
    return transcripts


@pytest.fixture
def commonvoice_copy(tiny_commonvoice, tmp_path):
    """A copy of the tiny CommonVoice folder that a test may damage."""
    return shutil.copytree(tiny_commonvoice, tmp_path / "en")


def fail_if_called(path):
    raise AssertionError(f"{path} decoded again")


def test_csv_rows_match_tsv(
    common_voice_prepare, tiny_commonvoice, tiny_librispeech, tmp_path, monkeypatch
):
    report = common_voice_prepare.prepare_common_voice(tiny_commonvoice, tmp_path)
    for split, librispeech_split in SPLITS.items():
        tsv_rows = read_table(os.path.join(tiny_commonvoice, f"{split}.tsv"), "\t")
        csv_rows = read_table(tmp_path / f"{split}.csv")
        assert report[split] == {
            "csv_file": os.path.join(tmp_path, f"{split}.csv"),
            "n_rows": len(tsv_rows),
            "skipped": {},
        }
        assert len(csv_rows) == len(tsv_rows)
        for tsv_row, csv_row in zip(tsv_rows, csv_rows, strict=True):
            assert csv_row["ID"] == tsv_row["path"][: -len(".mp3")]
            assert csv_row["wav"] == f"$data_root/clips/{tsv_row['path']}"
            assert csv_row["spk_id"] == tsv_row["client_id"]
            clip = os.path.join(tiny_commonvoice, "clips", tsv_row["path"])
            duration = len(sf.read(clip)[0]) / 48000
            assert float(csv_row["duration"]) == pytest.approx(duration, abs=1e-3)
        # Normalising the natural sentences gives back the LibriSpeech transcripts.
        assert {row["wrd"] for row in csv_rows} == librispeech_transcripts(
            tiny_librispeech, librispeech_split
        )
    assert not glob.glob(os.path.join(tmp_path, "*_skipped.txt"))

    # Up to date: the same report, no csv rewritten, no clip decoded again.
    written = os.path.getmtime(tmp_path / "train.csv")
    monkeypatch.setattr(validation, "decode_audio", fail_if_called)
    assert (
        common_voice_prepare.prepare_common_voice(tiny_commonvoice, tmp_path) == report
    )
    assert os.path.getmtime(tmp_path / "train.csv") == written


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("The cat sat down.", "THE CAT SAT DOWN"),
        ("Don’t stop—now!", "DON'T STOP NOW"),
        ('"Hello," she said.', "HELLO SHE SAID"),
        ("'Quoted' words, isn't it?", "QUOTED WORDS ISN'T IT"),
        ("Café  au\u00a0lait, naïve", "CAFE AU LAIT NAIVE"),
        ("Rock-and-roll 42 times…", "ROCK AND ROLL 42 TIMES"),  # digits kept
        ("?!...", ""),
    ],
)
def test_normalize_english(common_voice_prepare, sentence, expected):
    assert common_voice_prepare.normalize_text(sentence, "en") == expected


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("L’été est là.", "L'ÉTÉ EST LÀ"),
        ("«\u00a0Bonjour\u00a0», dit-elle\u202f!", "BONJOUR DIT ELLE"),
        ("Aujourd'hui, j’ai mangé des œufs.", "AUJOURD'HUI J'AI MANGÉ DES ŒUFS"),
        ("Cafe\u0301 crème", "CAFÉ CRÈME"),  # decomposed accent
    ],
)
def test_normalize_french(common_voice_prepare, sentence, expected):
    assert common_voice_prepare.normalize_text(sentence, "fr") == expected


def write_tsv(path, rows):
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("\t".join(rows[0]) + "\n")
        stream.writelines("\t".join(row.values()) + "\n" for row in rows)


def test_bad_rows_are_reported_and_skipped(
    common_voice_prepare, commonvoice_copy, tmp_path, caplog
):
    tsv_file = os.path.join(commonvoice_copy, "train.tsv")
    rows = read_table(tsv_file, "\t")
    n_good = len(rows) - 1
    empty_sentence_clip = rows[0]["path"]
    rows[0]["sentence"] = " ?! "
    rows.append({**rows[1], "path": "missing.mp3"})
    rows.append({**rows[1], "path": "garbage.mp3"})
    with open(os.path.join(commonvoice_copy, "clips", "garbage.mp3"), "wb") as f:
        f.write(b"not an mp3 file" * 50)
    write_tsv(tsv_file, rows)

    save_folder = tmp_path / "save"
    with caplog.at_level(logging.WARNING):
        report = common_voice_prepare.prepare_common_voice(
            commonvoice_copy, save_folder
        )
    assert report["train"]["skipped"] == {
        "empty sentence": [empty_sentence_clip],
        "missing clip": ["missing.mp3"],
        "audio unreadable": ["garbage.mp3"],
    }
    assert report["train"]["n_rows"] == n_good
    assert len(read_table(save_folder / "train.csv")) == n_good
    assert "train: skipped 3 of" in caplog.text and "missing.mp3" in caplog.text
    with open(save_folder / "train_skipped.txt", encoding="utf-8") as stream:
        assert "missing.mp3\tmissing clip\n" in stream.read()
    assert report["dev"]["skipped"] == {}


def test_missing_tsv_is_an_error(common_voice_prepare, commonvoice_copy, tmp_path):
    os.remove(os.path.join(commonvoice_copy, "dev.tsv"))
    with pytest.raises(DataPreparationError) as error:
        common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path / "save")
    assert os.path.join(commonvoice_copy, "dev.tsv") in str(error.value)
    assert "train.tsv" in str(error.value)  # lists what is there
    assert not (tmp_path / "save").exists()


def test_missing_folder_is_an_error(common_voice_prepare, tmp_path):
    missing = os.path.join(tmp_path, "fr")
    with pytest.raises(DataPreparationError, match=re.escape(missing)):
        common_voice_prepare.prepare_common_voice(missing, tmp_path / "save")


def test_missing_column_is_an_error(common_voice_prepare, commonvoice_copy, tmp_path):
    tsv_file = os.path.join(commonvoice_copy, "test.tsv")
    rows = [
        {key: value for key, value in row.items() if key != "client_id"}
        for row in read_table(tsv_file, "\t")
    ]
    write_tsv(tsv_file, rows)
    with pytest.raises(DataPreparationError, match="client_id"):
        common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path / "save")


def truncate_copy(source, destination):
    with open(source, "rb") as stream:
        content = stream.read()
    with open(destination, "wb") as stream:
        stream.write(content[: len(content) // 2])


def test_rows_that_cannot_be_used(
    common_voice_prepare, commonvoice_copy, tmp_path, caplog
):
    clips = os.path.join(commonvoice_copy, "clips")
    tsv_file = os.path.join(commonvoice_copy, "train.tsv")
    rows = read_table(tsv_file, "\t")
    n_rows = len(rows)
    rows[3]["sentence"] = "He was 42 years old."
    rows[4]["sentence"] = "A tab\tinside, unquoted"
    rows.append({**rows[5]})
    rows.append({**rows[1], "path": "../train.tsv"})
    rows.append({**rows[1], "path": "/etc/hostname"})
    truncate_copy(os.path.join(clips, rows[0]["path"]), os.path.join(clips, "cut.mp3"))
    rows.append({**rows[1], "path": "cut.mp3"})
    sf.write(os.path.join(clips, "short.mp3"), np.zeros(4800), 48000, format="MP3")
    rows.append({**rows[1], "path": "short.mp3"})
    write_tsv(tsv_file, rows)
    # A spreadsheet export quotes a field that holds a tab: read as one field.
    with open(tsv_file, encoding="utf-8") as stream:
        lines = stream.readlines()
    fields = lines[3].split("\t")
    fields[3] = '"Tabs\tand ""quotes"", read right"'
    lines[3] = "\t".join(fields)
    with open(tsv_file, "w", encoding="utf-8") as stream:
        stream.writelines(lines)
    # A clip of train listed again in dev.
    dev_tsv = os.path.join(commonvoice_copy, "dev.tsv")
    dev_rows = read_table(dev_tsv, "\t")
    write_tsv(dev_tsv, [*dev_rows, {**dev_rows[0], "path": rows[6]["path"]}])

    with caplog.at_level(logging.WARNING):
        report = common_voice_prepare.prepare_common_voice(
            commonvoice_copy, tmp_path, alphabet=" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        )
    assert report["train"]["skipped"] == {
        "digits in the sentence (numbers are not spelled out)": [
            f"{rows[3]['path']} ('He was 42 years old.')"
        ],
        "wrong number of columns": ["train.tsv line 6"],
        "clip listed twice": [
            f"{rows[5]['path']} (train.tsv line {n_rows + 2}, first on "
            "train.tsv line 7)"
        ],
        "path outside clips/": [
            f"../train.tsv (train.tsv line {n_rows + 3})",
            f"/etc/hostname (train.tsv line {n_rows + 4})",
        ],
        "audio truncated (fewer samples decode than its header announces)": ["cut.mp3"],
        "audio shorter than 0.25 s": ["short.mp3"],
    }
    assert report["train"]["n_rows"] == n_rows - 2
    words = {row["ID"]: row["wrd"] for row in read_table(tmp_path / "train.csv")}
    assert words[rows[2]["path"][: -len(".mp3")]] == "TABS AND QUOTES READ RIGHT"
    assert report["dev"]["skipped"] == {
        "clip listed twice": [
            f"{rows[6]['path']} (dev.tsv line {len(dev_rows) + 2}, first on "
            "train.tsv line 8)"
        ]
    }
    assert "train: skipped 7 of" in caplog.text and "dev: skipped 1 of" in caplog.text


def test_alphabet_and_accents(common_voice_prepare, commonvoice_copy, tmp_path):
    tsv_file = os.path.join(commonvoice_copy, "test.tsv")
    rows = read_table(tsv_file, "\t")
    rows[0]["sentence"] = "Un café crème"
    write_tsv(tsv_file, rows)
    clip = rows[0]["path"]
    alphabet = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    kept = common_voice_prepare.prepare_common_voice(
        commonvoice_copy, tmp_path / "kept", accented_letters=True, alphabet=alphabet
    )
    assert kept["test"]["skipped"] == {
        "characters outside the alphabet": [f"{clip} ('ÈÉ')"]
    }
    common_voice_prepare.prepare_common_voice(
        commonvoice_copy,
        tmp_path / "stripped",
        accented_letters=False,
        alphabet=alphabet,
    )
    words = {
        row["ID"]: row["wrd"] for row in read_table(tmp_path / "stripped/test.csv")
    }
    assert words[clip[: -len(".mp3")]] == "UN CAFE CREME"


def test_bad_rows_are_errors_without_skip_bad_files(
    common_voice_prepare, commonvoice_copy, tmp_path
):
    tsv_file = os.path.join(commonvoice_copy, "dev.tsv")
    rows = read_table(tsv_file, "\t")
    rows[1]["sentence"] = "Route 66"
    write_tsv(tsv_file, rows)
    with pytest.raises(DataPreparationError) as error:
        common_voice_prepare.prepare_common_voice(
            commonvoice_copy, tmp_path, skip_bad_files=False
        )
    assert f"{rows[1]['path']} ('Route 66')" in str(error.value)
    assert not glob.glob(str(tmp_path / "*.csv"))


def test_tsv_encodings(common_voice_prepare, commonvoice_copy, tmp_path):
    tsv_file = os.path.join(commonvoice_copy, "train.tsv")
    with open(tsv_file, "rb") as stream:
        content = stream.read()
    with open(tsv_file, "wb") as stream:  # a byte-order mark before "client_id"
        stream.write(b"\xef\xbb\xbf" + content)
    report = common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path)
    assert report["train"]["skipped"] == {}

    with open(tsv_file, "ab") as stream:
        stream.write("x\tx.mp3\tx\tCafé\n".encode("latin-1"))
    n_lines = content.count(b"\n") + 1
    with pytest.raises(
        DataPreparationError, match=f"{tsv_file} is not UTF-8 text .line {n_lines}"
    ):
        common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path)


def test_split_without_usable_rows(common_voice_prepare, commonvoice_copy, tmp_path):
    dev_tsv = os.path.join(commonvoice_copy, "dev.tsv")
    rows = read_table(dev_tsv, "\t")
    write_tsv(dev_tsv, [{**row, "sentence": "1, 2, 3"} for row in rows])
    with pytest.raises(DataPreparationError, match=f"No usable row in {dev_tsv}"):
        common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path)
    with open(dev_tsv, "w", encoding="utf-8") as stream:  # the header only
        stream.write("\t".join(rows[0]) + "\n")
    with pytest.raises(DataPreparationError, match=f"No usable row in {dev_tsv}"):
        common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path)
    assert not glob.glob(str(tmp_path / "*.csv"))


def test_convert_to_wav_is_refused(common_voice_prepare, tiny_commonvoice, tmp_path):
    with pytest.raises(ValueError, match="convert_to_wav"):
        common_voice_prepare.prepare_common_voice(
            tiny_commonvoice, tmp_path, convert_to_wav=True
        )
    assert not os.listdir(tmp_path)


def test_speechbrain_call_order(common_voice_prepare, commonvoice_copy, tmp_path):
    # SpeechBrain's positional order, with the tsv files kept elsewhere.
    tsv_folder = tmp_path / "tsv"
    tsv_folder.mkdir()
    tsv_files = [
        shutil.move(os.path.join(commonvoice_copy, f"{split}.tsv"), tsv_folder)
        for split in ("train", "dev", "test")
    ]
    report = common_voice_prepare.prepare_common_voice(
        commonvoice_copy, tmp_path / "save", *tsv_files, False, "en", False, False
    )
    n_rows = [report[split]["n_rows"] for split in ("train", "dev", "test")]
    assert n_rows == [24, 6, 6]

    # One file for dev and test: used twice, not a clip listed twice.
    report = common_voice_prepare.prepare_common_voice(
        commonvoice_copy, tmp_path / "dev_as_test", *tsv_files[:2], tsv_files[1]
    )
    assert report["test"] == {**report["dev"], "csv_file": report["test"]["csv_file"]}


def test_rows_with_missing_fields_are_counted_and_reported(
    common_voice_prepare, commonvoice_copy, tmp_path, caplog
):
    """A row that stops after client_id and path (its other fields missing)."""
    tsv_file = os.path.join(commonvoice_copy, "train.tsv")
    rows = read_table(tsv_file, "\t")
    with open(tsv_file, "a", encoding="utf-8") as stream:
        stream.write(f"{rows[0]['client_id']}\t{rows[0]['path']}\n")
    with caplog.at_level(logging.WARNING):
        report = common_voice_prepare.prepare_common_voice(commonvoice_copy, tmp_path)
    assert report["train"]["skipped"] == {
        "wrong number of columns": [f"train.tsv line {len(rows) + 2}"]
    }
    assert report["train"]["n_rows"] == len(rows)
    assert f"train: skipped 1 of {len(rows) + 1} rows" in caplog.text
