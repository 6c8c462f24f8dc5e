"""Tests of the tiny synthetic corpus generator."""

import csv
import glob
import hashlib
import json
import os
import re

import pytest
import soundfile as sf
from speechbrain.dataio.dataio import read_audio

from tools.tiny_corpus import (
    MANIFEST_NAME,
    SPLITS,
    generate_corpus,
)

TRANSCRIPT_PATTERN = re.compile(r"^[A-Z']+( [A-Z']+)*$")


def read_transcripts(split_folder):
    """{utterance_id: transcript} of all transcript files of a split."""
    transcripts = {}
    for path in glob.glob(os.path.join(split_folder, "*", "*", "*.trans.txt")):
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                utterance_id, text = line.rstrip("\n").split(" ", 1)
                transcripts[utterance_id] = text
    return transcripts


def file_hashes(folder):
    """{relative path: md5} of all files under a folder."""
    hashes = {}
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as stream:
                digest = hashlib.md5(stream.read()).hexdigest()
            hashes[os.path.relpath(path, folder)] = digest
    return hashes


def test_librispeech_layout(tiny_librispeech):
    for split, n_utterances in zip(SPLITS.values(), (24, 6, 6), strict=True):
        split_folder = os.path.join(tiny_librispeech, split)
        transcripts = read_transcripts(split_folder)
        audio_files = glob.glob(os.path.join(split_folder, "*", "*", "*.flac"))
        assert len(transcripts) == len(audio_files) == n_utterances
        for path in audio_files:
            utterance_id = os.path.basename(path)[: -len(".flac")]
            speaker, chapter, index = utterance_id.split("-")
            assert path.endswith(os.path.join(speaker, chapter, f"{utterance_id}.flac"))
            assert len(index) == 4
            assert TRANSCRIPT_PATTERN.match(transcripts[utterance_id])


def test_audio_is_16k_mono_flac(tiny_librispeech):
    for path in glob.glob(os.path.join(tiny_librispeech, "*", "*", "*", "*.flac")):
        info = sf.info(path)
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        assert 1.0 < info.duration < 6.0
        audio = read_audio(path)
        assert audio.ndim == 1 and audio.shape[0] == info.frames
        assert audio.abs().max() > 0.05  # not silence


def test_held_out_speakers_and_sentences(tiny_librispeech):
    with open(os.path.join(tiny_librispeech, MANIFEST_NAME), encoding="utf-8") as f:
        speakers = json.load(f)["speakers"].values()
    voices = {split: set() for split in SPLITS.values()}
    for speaker in speakers:
        voices[speaker["split"]].add((speaker["accent"], speaker["variant"]))
    train_voices = voices["train-clean-100"]
    assert not train_voices & voices["dev-clean"]
    assert not train_voices & voices["test-clean"]

    speaker_folders, sentences = {}, {}
    for split in SPLITS.values():
        split_folder = os.path.join(tiny_librispeech, split)
        speaker_folders[split] = set(os.listdir(split_folder))
        sentences[split] = set(read_transcripts(split_folder).values())
    assert len(speaker_folders["train-clean-100"]) >= 2
    for held_out in ("dev-clean", "test-clean"):
        assert not speaker_folders["train-clean-100"] & speaker_folders[held_out]
        assert not sentences["train-clean-100"] & sentences[held_out]


def test_deterministic_and_skips_complete_corpus(tmp_path):
    sizes = {"n_train": 4, "n_dev": 2, "n_test": 2, "show_progress": False}
    first = generate_corpus(tmp_path / "a", **sizes, seed=7, num_workers=1)
    second = generate_corpus(tmp_path / "b", **sizes, seed=7, num_workers=2)
    first_hashes = file_hashes(first)
    assert len(first_hashes) == 8 + 6 + 2  # flac, trans.txt, manifest and sentences
    assert first_hashes == file_hashes(second)

    # Same settings: nothing is rewritten.
    manifest_time = os.path.getmtime(os.path.join(first, MANIFEST_NAME))
    assert generate_corpus(tmp_path / "a", **sizes, seed=7) == first
    assert os.path.getmtime(os.path.join(first, MANIFEST_NAME)) == manifest_time

    # Another seed: the corpus is regenerated with other sentences.
    generate_corpus(tmp_path / "b", **sizes, seed=8)
    train_a = read_transcripts(os.path.join(first, "train-clean-100"))
    train_b = read_transcripts(os.path.join(second, "train-clean-100"))
    assert set(train_a.values()) != set(train_b.values())


def test_refuses_to_overwrite_foreign_data(tmp_path):
    os.makedirs(tmp_path / "LibriSpeech" / "dev-clean")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_corpus(tmp_path, n_train=2, n_dev=1, n_test=1, show_progress=False)


def test_commonvoice_layout(tiny_librispeech, tiny_commonvoice):
    assert os.path.basename(tiny_commonvoice) == "en"
    sentences = []
    for split, librispeech_split in SPLITS.items():
        with open(
            os.path.join(tiny_commonvoice, f"{split}.tsv"), encoding="utf-8"
        ) as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        transcripts = read_transcripts(
            os.path.join(tiny_librispeech, librispeech_split)
        )
        assert len(rows) == len(transcripts)
        for row in rows:
            assert row["client_id"] and row["path"].endswith(".mp3")
            sentence = row["sentence"]
            sentences.append(sentence)
            assert sentence[0].isupper() and sentence[1:] != sentence[1:].upper()
            assert sentence[-1] in ".?"
            info = sf.info(os.path.join(tiny_commonvoice, "clips", row["path"]))
            assert (info.samplerate, info.channels) == (48000, 1)
            assert info.frames > 0
    # Both apostrophe styles occur, as in real releases.
    assert any("\u2019" in sentence for sentence in sentences)
    assert any("'" in sentence for sentence in sentences)
