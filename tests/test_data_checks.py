"""Tests of speechbrain_pom/dataio/validation.py: audio decoding and its cache,
UTF-8 text reading and the corpus walk through symlinks."""

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from speechbrain_pom.dataio import validation
from speechbrain_pom.dataio.validation import (
    DataPreparationError,
    check_audio_files,
    find_files,
    read_text_lines,
)

SAMPLE_RATE = 16000


def noise(seconds, channels=1):
    frames = int(seconds * SAMPLE_RATE)
    audio = 0.1 * np.random.default_rng(0).standard_normal((frames, channels))
    return audio.squeeze(axis=1) if channels == 1 else audio


def write_truncated(path, audio_format):
    """Writes 1 s of audio, then keeps only the first half of the file's bytes
    (the header still announces 1 s)."""
    sf.write(path, noise(1.0), SAMPLE_RATE, format=audio_format)
    with open(path, "rb") as stream:
        content = stream.read()
    with open(path, "wb") as stream:
        stream.write(content[: len(content) // 2])


def make_good(path):
    sf.write(path, noise(0.5), SAMPLE_RATE, format="FLAC")


def make_truncated_flac(path):
    write_truncated(path, "FLAC")


def make_truncated_mp3(path):
    write_truncated(path, "MP3")


def make_nan(path):
    audio = noise(0.5)
    audio[10] = np.nan
    sf.write(path, audio, SAMPLE_RATE, format="WAV", subtype="FLOAT")


def make_inf(path):
    audio = noise(0.5)
    audio[-1] = np.inf
    sf.write(path, audio, SAMPLE_RATE, format="WAV", subtype="DOUBLE")


def make_empty(path):
    sf.write(path, np.zeros(0), SAMPLE_RATE, format="WAV")


def make_short(path):
    sf.write(path, noise(0.1), SAMPLE_RATE, format="FLAC")


def make_stereo(path):
    sf.write(path, noise(0.5, channels=2), SAMPLE_RATE, format="FLAC")


def make_8khz(path):
    sf.write(path, noise(0.5), 8000, format="FLAC")


def make_garbage(path):
    with open(path, "wb") as stream:
        stream.write(b"not audio" * 100)


@pytest.mark.parametrize(
    "make, expected",
    [
        (make_good, (0.5, None)),
        (make_truncated_flac, (None, "corrupt (decoding fails part-way)")),
        (
            make_truncated_mp3,
            (None, "truncated (fewer samples decode than its header announces)"),
        ),
        (make_nan, (None, "non-finite samples (NaN or inf)")),
        (make_inf, (None, "non-finite samples (NaN or inf)")),
        (make_empty, (None, "empty (zero samples)")),
        (make_short, (None, "shorter than 0.25 s")),
        (make_stereo, (None, "not mono")),
        (make_8khz, (None, "not sampled at 16000 Hz")),
        (make_garbage, (None, "unreadable")),
    ],
)
def test_decoding_finds_the_problem(tmp_path, make, expected):
    path = str(tmp_path / "audio")
    make(path)
    assert check_audio_files([path], SAMPLE_RATE, min_duration=0.25) == [expected]


def test_cache_decodes_each_file_once(tmp_path, monkeypatch):
    paths = [str(tmp_path / f"{index}.flac") for index in range(3)]
    for path in paths:
        make_good(path)
    cache_file = str(tmp_path / "save" / "audio_checks.json")
    first = check_audio_files(paths, SAMPLE_RATE, cache_file=cache_file)

    decoded = []
    real_decode = validation.decode_audio
    monkeypatch.setattr(
        validation,
        "decode_audio",
        lambda path: decoded.append(path) or real_decode(path),
    )
    # Unchanged files: nothing decoded; a new requirement needs no decoding.
    assert check_audio_files(paths, SAMPLE_RATE, cache_file=cache_file) == first
    assert (
        check_audio_files(paths, SAMPLE_RATE, 1.0, cache_file)
        == [(None, "shorter than 1.0 s")] * 3
    )
    assert decoded == []

    # Rewritten in place with its old modification time: the size tells.
    stat = os.stat(paths[1])
    make_truncated_flac(paths[1])
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    results = check_audio_files(paths, SAMPLE_RATE, cache_file=cache_file)
    assert results[1] == (None, "corrupt (decoding fails part-way)")
    assert decoded == [paths[1]]

    # Deleted files leave the cache when it is next written.
    os.remove(paths[2])
    new_path = str(tmp_path / "new.flac")
    make_good(new_path)
    check_audio_files([new_path], SAMPLE_RATE, cache_file=cache_file)
    with open(cache_file, encoding="utf-8") as stream:
        assert sorted(json.load(stream)["files"]) == sorted([*paths[:2], new_path])


def test_damaged_cache_is_ignored(tmp_path, caplog):
    path = str(tmp_path / "a.flac")
    make_short(path)
    cache_file = tmp_path / "audio_checks.json"
    cache_file.write_text('{"header": ', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        result = check_audio_files([path], min_duration=0.25, cache_file=cache_file)
    assert result == [(None, "shorter than 0.25 s")]
    assert str(cache_file) in caplog.text
    assert json.loads(cache_file.read_text(encoding="utf-8"))["files"]


def test_many_files_decode_in_parallel(tmp_path, monkeypatch):
    paths = [str(tmp_path / f"{index}.flac") for index in range(4)]
    for path in paths:
        make_good(path)
    make_nan(paths[2])
    serial = check_audio_files(paths, SAMPLE_RATE)
    monkeypatch.setattr(validation, "PARALLEL_MIN_FILES", 2)
    assert check_audio_files(paths, SAMPLE_RATE) == serial
    assert serial[2] == (None, "non-finite samples (NaN or inf)")


def test_text_with_byte_order_mark(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfONE\r\nTWO\n")
    assert list(read_text_lines(path)) == [(1, "ONE"), (2, "TWO")]


def test_text_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("ONE\nCAFÉ\n".encode("latin-1"))
    with pytest.raises(DataPreparationError, match=f"{path} is not UTF-8 text .line 2"):
        list(read_text_lines(path))


def test_walk_survives_symlink_loops_and_dangling_links(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "a").mkdir(parents=True)
    (corpus / "a" / "x.flac").write_bytes(b"")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "y.flac").write_bytes(b"")
    os.symlink(outside, corpus / "linked")  # followed once
    os.symlink(corpus, corpus / "a" / "loop")  # back to the top
    os.symlink(outside, corpus / "again")  # a second link to the same folder
    os.symlink(tmp_path / "nothing.flac", corpus / "a" / "dangling.flac")
    os.symlink(corpus / "a" / "self.flac", corpus / "a" / "self.flac")

    files, problems = find_files(str(corpus))
    assert files == [str(corpus / "a" / "x.flac"), str(corpus / "again" / "y.flac")]
    assert sorted(problems) == [
        ("dangling symlink", str(corpus / "a" / "dangling.flac")),
        ("dangling symlink", str(corpus / "a" / "self.flac")),
        (validation.LINK_TO_WALKED_FOLDER, str(corpus / "a" / "loop")),
        (validation.LINK_TO_WALKED_FOLDER, str(corpus / "linked")),
    ]
