"""Shared checks for the data preparation scripts.

The LibriSpeech and CommonVoice preparations validate their inputs before they
write any csv file, and report problems with the names of the offending files.
This module holds the error class and the helpers both of them use: decoding
every audio file once (with a cache), reading UTF-8 text, checking transcripts
against an alphabet, walking a corpus safely through symlinks, and writing csv
files atomically. ``python -m speechbrain_pom.dataio.validation <folder>`` decodes
every audio file of a folder and says how long it took.

Authors
 * speechbrain-pom contributors
"""

import argparse
import codecs
import csv
import io
import json
import logging
import os
import sys
import time
from typing import NamedTuple

import numpy as np
import soundfile as sf
from speechbrain.utils.parallel import parallel_map

logger = logging.getLogger(__name__)

#: How many file names an error message or a warning lists before "...".
MAX_LISTED_FILES = 10

#: Columns of the SpeechBrain csv files written by the preparations.
CSV_FIELDS = ["ID", "duration", "wav", "spk_id", "wrd"]

#: Default shortest usable utterance, in seconds. BEST-RQ's masking needs at
#: least ``mask_length`` (4) encoder frames, each 40 ms (10 ms filterbank hop,
#: 4x front-end): shorter than 0.12 s crashes it. CTC needs an encoder frame per
#: output character. 0.25 s (7 frames) still holds a short spoken word; a
#: shorter file in a speech corpus is a cut or an empty take.
MIN_DURATION = 0.25

#: File name of the decode cache, written next to the csv files.
AUDIO_CACHE_NAME = "audio_checks.json"

#: Problems of ``decode_audio``: the file cannot be opened, or stops decoding.
UNREADABLE = "unreadable"
CORRUPT = "corrupt (decoding fails part-way)"

#: A decode this much shorter than the header announces is a truncated file.
#: Not zero: an MP3 header without an exact frame count is an estimate.
TRUNCATION_TOLERANCE = 0.01

#: Samples per channel decoded at a time (keeps memory flat for long files).
DECODE_BLOCK_FRAMES = 1 << 16

#: Fewer files than this are decoded in the main process (no pool start-up).
PARALLEL_MIN_FILES = 256

#: Problems of ``find_files``.
DANGLING_LINK = "dangling symlink"
LINK_TO_WALKED_FOLDER = "symlink to a folder already walked (a loop or a duplicate)"


class DataPreparationError(ValueError):
    """Raised when a dataset folder cannot be prepared.

    The message always names the offending file(s) or folder(s).
    """


def list_some(names, limit=MAX_LISTED_FILES):
    """Formats a list of names as a short, readable string.

    Arguments
    ---------
    names : list of str
        The names (files, IDs...) to list.
    limit : int
        How many names to show before summarising the rest.

    Returns
    -------
    str
        The first ``limit`` names, comma separated, followed by the number of
        names left out, if any.

    Example
    -------
    >>> list_some(["a.flac", "b.flac", "c.flac"], limit=2)
    'a.flac, b.flac, ... (1 more)'
    """
    names = [str(name) for name in names]
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return shown


def group_by_reason(problems):
    """Groups ``(reason, name)`` pairs by reason, keeping their order.

    Arguments
    ---------
    problems : list of tuple
        ``(reason, name)`` pairs, e.g. ``("unreadable", "/data/a.flac")``.

    Returns
    -------
    dict
        ``{reason: [name, ...]}``.

    Example
    -------
    >>> group_by_reason([("unreadable", "a"), ("missing", "b"), ("unreadable", "c")])
    {'unreadable': ['a', 'c'], 'missing': ['b']}
    """
    grouped = {}
    for reason, name in problems:
        grouped.setdefault(reason, []).append(name)
    return grouped


def describe_problems(problems, limit=MAX_LISTED_FILES):
    """Formats ``(reason, name)`` pairs as one line per reason.

    Arguments
    ---------
    problems : list of tuple
        ``(reason, name)`` pairs.
    limit : int
        How many names to list per reason.

    Returns
    -------
    str
        Lines like `` - unreadable (2): a.flac, b.flac``.

    Example
    -------
    >>> print(describe_problems([("unreadable", "a.flac"), ("unreadable", "b.flac")]))
     - unreadable (2): a.flac, b.flac
    """
    return "\n".join(
        f" - {reason} ({len(names)}): {list_some(names, limit)}"
        for reason, names in group_by_reason(problems).items()
    )


class AudioFacts(NamedTuple):
    """What decoding an audio file found, independent of any requirement.

    Arguments
    ---------
    sample_rate : int
        Sampling rate announced by the header (0 if unreadable).
    channels : int
        Number of channels (0 if unreadable).
    header_frames : int
        Number of samples per channel that the header announces.
    frames : int
        Number of samples per channel that actually decoded.
    finite : bool
        Whether every decoded sample is finite (no NaN, no inf).
    error : str or None
        ``UNREADABLE`` or ``CORRUPT`` when decoding failed, else None.
    """

    sample_rate: int
    channels: int
    header_frames: int
    frames: int
    finite: bool
    error: str | None


def decode_audio(path):
    """Decodes a whole audio file, block by block, and reports what it found.

    Reading every sample (not only the header) is what catches a FLAC that
    loses sync, a truncated MP3 whose header promises more than decodes, and
    NaN or inf samples in a float WAV.

    Arguments
    ---------
    path : str
        The audio file.

    Returns
    -------
    AudioFacts
        What the header announced and what decoded.

    Example
    -------
    >>> decode_audio("/no/such/file.flac").error
    'unreadable'
    """
    try:
        stream = sf.SoundFile(path)
    except (RuntimeError, OSError):  # soundfile.LibsndfileError is a RuntimeError
        return AudioFacts(0, 0, 0, 0, True, UNREADABLE)
    frames, finite, error = 0, True, None
    with stream:
        try:
            while True:
                block = stream.read(DECODE_BLOCK_FRAMES, dtype="float32")
                if not len(block):
                    break
                frames += len(block)
                finite = finite and bool(np.isfinite(block).all())
        except (RuntimeError, OSError):
            error = CORRUPT
        return AudioFacts(
            stream.samplerate, stream.channels, stream.frames, frames, finite, error
        )


def judge_audio(facts, expected_sample_rate=None, min_duration=0.0):
    """Tells whether decoded audio is usable, and its duration.

    Arguments
    ---------
    facts : AudioFacts
        What decoding found (see ``decode_audio``).
    expected_sample_rate : int, optional
        If given, another sampling rate is a problem.
    min_duration : float
        Audio shorter than this (in seconds) is a problem.

    Returns
    -------
    duration : float or None
        The decoded duration in seconds, or None when there is a problem.
    problem : str or None
        None when the audio is usable, else a short reason, the same text for
        every file with the same problem.

    Example
    -------
    >>> judge_audio(AudioFacts(16000, 1, 800, 800, True, None), min_duration=0.25)
    (None, 'shorter than 0.25 s')
    >>> judge_audio(AudioFacts(16000, 1, 8000, 8000, True, None))
    (0.5, None)
    """
    if facts.error:
        return None, facts.error
    if facts.frames == 0:
        return None, "empty (zero samples)"
    if facts.frames < facts.header_frames * (1 - TRUNCATION_TOLERANCE):
        return None, "truncated (fewer samples decode than its header announces)"
    if not facts.finite:
        return None, "non-finite samples (NaN or inf)"
    if expected_sample_rate is not None and facts.sample_rate != expected_sample_rate:
        return None, f"not sampled at {expected_sample_rate} Hz"
    if facts.channels != 1:
        return None, "not mono"
    duration = facts.frames / facts.sample_rate
    if duration < min_duration:
        return None, f"shorter than {min_duration} s"
    return duration, None


def check_audio_files(
    paths, expected_sample_rate=None, min_duration=0.0, cache_file=None
):
    """Decodes audio files once and tells which are usable.

    With ``cache_file``, what decoding found is remembered per file, keyed by
    its absolute path, size and modification time (nanoseconds): a file that
    has not changed is not decoded again, and a file rewritten with its old
    modification time is still decoded again when its size changed. The cache
    holds no requirement, so changing ``expected_sample_rate`` or
    ``min_duration`` needs no new decoding. Many new files are decoded in
    parallel processes (SpeechBrain's ``parallel_map``).

    Arguments
    ---------
    paths : list of str
        The audio files.
    expected_sample_rate : int, optional
        If given, a file with another sampling rate is a problem.
    min_duration : float
        A file shorter than this (in seconds) is a problem.
    cache_file : str, optional
        A json file (created if needed, usually next to the csv files).

    Returns
    -------
    list of tuple
        ``(duration, problem)`` per file, as ``judge_audio`` returns them.

    Example
    -------
    >>> check_audio_files(["/no/such/file.flac"])
    [(None, 'unreadable')]
    """
    cache = _load_audio_cache(cache_file)
    # Signatures taken before decoding: a file changed meanwhile is decoded again
    # next time instead of keeping stale results under its new signature.
    signatures = {os.path.abspath(path): _file_signature(path) for path in paths}
    to_decode = sorted(
        path
        for path, signature in signatures.items()
        if signature is not None and cache.get(path, [None])[0] != signature
    )
    for path, facts in zip(to_decode, _decode_all(to_decode), strict=True):
        cache[path] = [signatures[path], *facts]
    if cache_file is not None and to_decode:
        _save_audio_cache(cache, cache_file)
    results = []
    for path in map(os.path.abspath, paths):
        if signatures[path] is None:  # vanished, or a dangling symlink
            results.append((None, UNREADABLE))
        else:
            facts = AudioFacts(*cache[path][1:])
            results.append(judge_audio(facts, expected_sample_rate, min_duration))
    return results


def _file_signature(path):
    """``[size, mtime_ns]`` of a file (after symlinks), None if it is missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _decode_all(paths):
    """Decodes files, in parallel processes when there are many."""
    if len(paths) < PARALLEL_MIN_FILES:
        return [decode_audio(path) for path in paths]
    return list(parallel_map(decode_audio, paths, chunk_size=16))


def _cache_header():
    """What the cached results depend on besides the files themselves."""
    return {"format": 1, "libsndfile": sf.__libsndfile_version__}


def _load_audio_cache(cache_file):
    """Reads the decode cache: ``{path: [signature, *AudioFacts]}``."""
    if cache_file is None or not os.path.isfile(cache_file):
        return {}
    try:
        with open(cache_file, encoding="utf-8") as stream:
            content = json.load(stream)
    except (OSError, ValueError):
        logger.warning("Ignoring an unreadable audio check cache: %s", cache_file)
        return {}
    if content.get("header") != _cache_header():
        return {}
    return content["files"]


def _save_audio_cache(cache, cache_file):
    """Writes the decode cache atomically, dropping files that are gone."""
    kept = {path: entry for path, entry in cache.items() if os.path.exists(path)}
    os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
    tmp_file = f"{cache_file}.tmp"
    with open(tmp_file, "w", encoding="utf-8") as stream:
        json.dump({"header": _cache_header(), "files": kept}, stream)
    os.replace(tmp_file, cache_file)


def read_text_lines(path):
    """Reads a UTF-8 text file line by line, with or without a byte-order mark.

    Arguments
    ---------
    path : str
        The text file.

    Yields
    ------
    line_number : int
        1 for the first line.
    line : str
        The line, without its line ending.

    Raises
    ------
    DataPreparationError
        When a line is not valid UTF-8; the message names the file and line.
    """
    with open(path, "rb") as stream:
        for line_number, raw_line in enumerate(stream, start=1):
            if line_number == 1:
                raw_line = raw_line.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataPreparationError(
                    f"{path} is not UTF-8 text (line {line_number}, byte "
                    f"{error.start}: {raw_line[error.start : error.end]!r}). "
                    "Convert it to UTF-8, e.g. with iconv."
                ) from None
            yield line_number, line.rstrip("\r\n")


def characters_outside(text, alphabet):
    """The characters of a text that are not in an alphabet.

    Arguments
    ---------
    text : str
        A transcript.
    alphabet : str or iterable of str, optional
        The allowed characters; None allows everything.

    Returns
    -------
    str
        The offending characters, sorted, each once ("" when all are allowed).

    Example
    -------
    >>> characters_outside("CAFÉ AU LAIT 2", " ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    '2É'
    """
    if alphabet is None:
        return ""
    return "".join(sorted(set(text) - set(alphabet)))


def find_files(folder):
    """Lists every file under a folder, following symlinked folders safely.

    Each real folder is walked once: a symlink loop, or a second link to a
    folder already walked, is not entered again, so the walk always ends and
    never lists a file twice. Dangling symlinks (and links to themselves) are
    reported, not listed.

    Arguments
    ---------
    folder : str
        The folder to walk.

    Returns
    -------
    files : list of str
        Every file found, sorted.
    problems : list of tuple
        ``(reason, path)`` for each dangling symlink, symlinked folder not
        entered, and folder that could not be listed.

    Example
    -------
    >>> find_files("/no/such/folder")
    ([], [('folder that cannot be listed', '/no/such/folder')])
    """
    files, problems = [], []

    def report_unlistable(error):
        problems.append(("folder that cannot be listed", error.filename))

    claimed = {os.path.realpath(folder)}
    for root, dirs, names in os.walk(
        folder, onerror=report_unlistable, followlinks=True
    ):
        # Real folders first, so that a link never hides the folder it copies.
        dirs.sort(key=lambda name: (os.path.islink(os.path.join(root, name)), name))
        for name in list(dirs):
            path = os.path.join(root, name)
            real_path = os.path.realpath(path)
            if real_path in claimed:
                dirs.remove(name)
                problems.append((LINK_TO_WALKED_FOLDER, path))
            claimed.add(real_path)
        for name in names:
            path = os.path.join(root, name)
            if os.path.exists(path):
                files.append(path)
            else:
                problems.append((DANGLING_LINK, path))
    return sorted(files), problems


def write_csv(rows, csv_file, fieldnames=CSV_FIELDS):
    """Writes rows to a csv file atomically, unless it already holds them.

    The file is first written under a temporary name and then renamed, so an
    interrupted run never leaves a partial csv that looks complete. A csv that
    already holds exactly these rows is left untouched (same modification
    time), so that a preparation run twice changes nothing.

    Arguments
    ---------
    rows : list of dict
        One dict per line, keyed by ``fieldnames``.
    csv_file : str
        The destination file.
    fieldnames : list of str
        The csv header.

    Returns
    -------
    bool
        True when the file was written, False when it was already up to date.
    """
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    content = text.getvalue()
    if os.path.isfile(csv_file):
        with open(csv_file, encoding="utf-8", newline="") as stream:
            if stream.read() == content:
                return False
    os.makedirs(os.path.dirname(os.path.abspath(csv_file)), exist_ok=True)
    tmp_file = f"{csv_file}.tmp"
    with open(tmp_file, "w", newline="", encoding="utf-8") as stream:
        stream.write(content)
    os.replace(tmp_file, csv_file)
    return True


def main(argv=None):
    """Decodes every audio file of a folder and reports problems and speed.

    ``python -m speechbrain_pom.dataio.validation <folder> [--suffix .flac]``
    prints how many files and hours of audio were decoded, how long it took
    (no cache) and which files have a problem.

    Arguments
    ---------
    argv : list of str, optional
        The command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every file is usable, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("folder", help="the corpus folder, walked recursively")
    parser.add_argument("--suffix", default=".flac", help="audio file suffix")
    parser.add_argument("--min_duration", type=float, default=MIN_DURATION)
    args = parser.parse_args(argv)
    files, problems = find_files(args.folder)
    audio_files = [path for path in files if path.endswith(args.suffix)]
    start = time.perf_counter()
    results = check_audio_files(audio_files, min_duration=args.min_duration)
    seconds = time.perf_counter() - start
    hours = sum(duration for duration, _ in results if duration) / 3600
    problems += [
        (problem, path)
        for path, (_, problem) in zip(audio_files, results, strict=True)
        if problem
    ]
    print(
        f"{len(audio_files)} files, {hours:.3f} h of audio decoded in "
        f"{seconds:.1f} s: {seconds / max(hours, 1e-9):.0f} s per hour of audio"
    )
    if problems:
        print(describe_problems(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
