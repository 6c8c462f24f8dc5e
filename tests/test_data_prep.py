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

from speechbrain_pom.dataio import validation
from speechbrain_pom.dataio.validation import DataPreparationError

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


ALPHABET = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def rewrite_transcript_line(transcript_file, utterance_id, new_line):
    with open(transcript_file, encoding="utf-8") as stream:
        lines = stream.readlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(utterance_id))
    lines[index] = new_line
    with open(transcript_file, "w", encoding="utf-8") as stream:
        stream.writelines(lines)
    return index + 1


def test_transcripts_are_normalised(librispeech_prepare, corpus_copy, tmp_path):
    flac_file, transcript_file = first_utterance(corpus_copy)
    utterance_id = os.path.basename(flac_file)[:-5]
    rewrite_transcript_line(
        transcript_file, utterance_id, f"{utterance_id}  the\tCat  sat \n"
    )
    # A byte-order mark before the first ID of another transcript file.
    other_flac, other_transcripts = first_utterance(corpus_copy, "dev-clean")
    with open(other_transcripts, "rb") as stream:
        content = stream.read()
    with open(other_transcripts, "wb") as stream:
        stream.write(b"\xef\xbb\xbf" + content)

    csv_files = librispeech_prepare.prepare_librispeech(
        corpus_copy, tmp_path, alphabet=ALPHABET
    )
    words = {row["ID"]: row["wrd"] for row in read_csv(csv_files["train-clean-100"])}
    assert words[utterance_id] == "THE CAT SAT"
    dev_ids = {row["ID"] for row in read_csv(csv_files["dev-clean"])}
    assert os.path.basename(other_flac)[:-5] in dev_ids


def test_character_outside_the_alphabet(librispeech_prepare, corpus_copy, tmp_path):
    flac_file, transcript_file = first_utterance(corpus_copy)
    utterance_id = os.path.basename(flac_file)[:-5]
    line = rewrite_transcript_line(
        transcript_file, utterance_id, f"{utterance_id} CAFÉ AT 9\n"
    )
    with pytest.raises(DataPreparationError) as error:
        librispeech_prepare.prepare_librispeech(
            corpus_copy, tmp_path / "save", alphabet=ALPHABET
        )
    assert f"{transcript_file} line {line}: '9É'" in str(error.value)
    # Without an alphabet nothing is checked; with skip_bad_files it is skipped.
    librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path / "unchecked")
    csv_files = librispeech_prepare.prepare_librispeech(
        corpus_copy, tmp_path / "skipped", alphabet=ALPHABET, skip_bad_files=True
    )
    ids = {row["ID"] for row in read_csv(csv_files["train-clean-100"])}
    assert len(ids) == 23 and utterance_id not in ids


def test_transcript_not_utf8(librispeech_prepare, corpus_copy, tmp_path):
    flac_file, transcript_file = first_utterance(corpus_copy)
    with open(transcript_file, "ab") as stream:
        stream.write("X CAFÉ\n".encode("latin-1"))
    with pytest.raises(DataPreparationError, match=f"{transcript_file} is not UTF-8"):
        librispeech_prepare.prepare_librispeech(
            corpus_copy, tmp_path / "save", skip_bad_files=True
        )


def test_same_id_in_two_chapters(librispeech_prepare, corpus_copy, tmp_path):
    flac_file, transcript_file = first_utterance(corpus_copy)
    utterance_id = os.path.basename(flac_file)[:-5]
    other_chapter = os.path.join(os.path.dirname(os.path.dirname(flac_file)), "999")
    os.makedirs(other_chapter)
    copy = shutil.copy(flac_file, other_chapter)
    with open(transcript_file, encoding="utf-8") as stream:
        line = next(line for line in stream if line.startswith(utterance_id))
    with open(os.path.join(other_chapter, "x-999.trans.txt"), "w") as stream:
        stream.write(line)
    with pytest.raises(DataPreparationError) as error:
        librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path)
    message = str(error.value)
    assert "utterance ID found twice in the split (1)" in message
    assert flac_file in message and copy in message and transcript_file in message


def test_empty_split_is_an_error(librispeech_prepare, corpus_copy, tmp_path):
    os.makedirs(os.path.join(corpus_copy, "test-other"))
    with pytest.raises(DataPreparationError, match="No usable utterance.*test-other"):
        librispeech_prepare.prepare_librispeech(
            corpus_copy, tmp_path, te_splits=["test-other"]
        )
    assert not glob.glob(str(tmp_path / "*.csv"))


def test_split_with_every_row_skipped(librispeech_prepare, corpus_copy, tmp_path):
    for flac_file in glob.glob(os.path.join(corpus_copy, "dev-clean/*/*/*.flac")):
        damage_too_short(flac_file, None)
    with pytest.raises(DataPreparationError) as error:
        librispeech_prepare.prepare_librispeech(
            corpus_copy, tmp_path, skip_bad_files=True
        )
    assert "dev-clean" in str(error.value) and "(6 utterance(s) skipped" in str(
        error.value
    )
    assert not glob.glob(str(tmp_path / "*.csv"))


def test_symlink_loops_and_dangling_links(
    librispeech_prepare, corpus_copy, tmp_path, caplog
):
    speaker_folder = os.path.dirname(os.path.dirname(first_utterance(corpus_copy)[0]))
    loop = os.path.join(speaker_folder, "loop")
    os.symlink(speaker_folder, loop)
    dangling = os.path.join(speaker_folder, "gone.flac")
    os.symlink(os.path.join(tmp_path, "nowhere.flac"), dangling)
    for _ in range(2):  # the second run reads what the first one cached
        with caplog.at_level(logging.WARNING):
            csv_files = librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path)
        assert loop in caplog.text and dangling in caplog.text
        assert len(read_csv(csv_files["train-clean-100"])) == 24
        caplog.clear()


def test_second_run_decodes_only_changed_files(
    librispeech_prepare, corpus_copy, tmp_path, monkeypatch
):
    csv_files = librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path)
    decoded = []
    real_decode = validation.decode_audio
    monkeypatch.setattr(
        validation,
        "decode_audio",
        lambda path: decoded.append(path) or real_decode(path),
    )
    librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path)
    assert decoded == []

    # Damaged in place, its modification time put back: still caught.
    flac_file, transcript_file = first_utterance(corpus_copy)
    stat = os.stat(flac_file)
    damage_truncated(flac_file, transcript_file)
    os.utime(flac_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataPreparationError, match=flac_file):
        librispeech_prepare.prepare_librispeech(corpus_copy, tmp_path)
    assert decoded == [flac_file]
    assert len(read_csv(csv_files["train-clean-100"])) == 24  # left as it was


def test_speechbrain_arguments(librispeech_prepare, corpus_copy, tmp_path):
    csv_files = librispeech_prepare.prepare_librispeech(
        corpus_copy,
        tmp_path,
        tr_splits=["train-clean-100"],
        dev_splits=["dev-clean"],
        te_splits=["test-clean"],
        select_n_sentences=[5, 2, 3],
        merge_lst=["train-clean-100", "dev-clean"],
        merge_name="train.csv",
    )
    counts = {split: len(read_csv(path)) for split, path in csv_files.items()}
    assert counts == {"train-clean-100": 5, "dev-clean": 2, "test-clean": 3}
    merged = read_csv(tmp_path / "train.csv")
    assert [row["ID"] for row in merged] == [
        row["ID"]
        for split in ("train-clean-100", "dev-clean")
        for row in read_csv(csv_files[split])
    ]
    one_number = librispeech_prepare.prepare_librispeech(
        corpus_copy, tmp_path / "four", select_n_sentences=4
    )
    assert all(len(read_csv(path)) == 4 for path in one_number.values())


@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"create_lexicon": True}, "create_lexicon"),
        ({"merge_lst": ["dev-clean"]}, "merge_name"),
        ({"merge_lst": ["train-other-500"], "merge_name": "a.csv"}, "train-other-500"),
        ({"select_n_sentences": [1, 2]}, "select_n_sentences"),
    ],
)
def test_unsupported_arguments_are_refused(
    librispeech_prepare, tiny_librispeech, tmp_path, arguments, named
):
    with pytest.raises(ValueError, match=named):
        librispeech_prepare.prepare_librispeech(tiny_librispeech, tmp_path, **arguments)
    assert not os.listdir(tmp_path)
