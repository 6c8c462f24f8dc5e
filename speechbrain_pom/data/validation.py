"""Shared checks for the data preparation scripts.

The LibriSpeech and CommonVoice preparations validate their inputs before they
write anything, and report problems with the names of the offending files. This
module holds the error class and the small helpers both of them use.

Authors
 * speechbrain-pom contributors
"""

import csv
import os

import soundfile as sf

#: How many file names an error message or a warning lists before "...".
MAX_LISTED_FILES = 10

#: Columns of the SpeechBrain csv files written by the preparations.
CSV_FIELDS = ["ID", "duration", "wav", "spk_id", "wrd"]


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


def check_audio_file(path, expected_sample_rate=None):
    """Checks that an audio file can be read, is non-empty and mono.

    Only the header is read (``soundfile.info``), which keeps the check fast.

    Arguments
    ---------
    path : str
        The audio file.
    expected_sample_rate : int, optional
        If given, a file with another sampling rate is reported as a problem.

    Returns
    -------
    duration : float or None
        Duration in seconds, or None when the file has a problem.
    problem : str or None
        None when the file is fine, else one of "unreadable",
        "empty (zero samples)", "not sampled at <expected_sample_rate> Hz" or
        "not mono" (the same text for all files with the same problem).

    Example
    -------
    >>> check_audio_file("/no/such/file.flac")[1]
    'unreadable'
    """
    try:
        info = sf.info(path)
    except (RuntimeError, OSError):  # soundfile.LibsndfileError is a RuntimeError
        return None, "unreadable"
    if info.frames <= 0:
        return None, "empty (zero samples)"
    if expected_sample_rate is not None and info.samplerate != expected_sample_rate:
        return None, f"not sampled at {expected_sample_rate} Hz"
    if info.channels != 1:
        return None, "not mono"
    return info.frames / info.samplerate, None


def newest_mtime(paths):
    """Returns the most recent modification time among files and folders.

    Folders are walked recursively: adding or removing a file changes the
    modification time of its folder, so both edits and deletions are seen.

    Arguments
    ---------
    paths : list of str
        Files and/or folders.

    Returns
    -------
    float
        The newest modification time (0.0 when nothing exists).
    """
    newest = 0.0
    for path in paths:
        if not os.path.exists(path):
            continue
        newest = max(newest, os.path.getmtime(path))
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                newest = max(newest, os.path.getmtime(os.path.join(root, name)))
    return newest


def outputs_up_to_date(output_files, input_paths):
    """Tells whether all output files exist and are newer than the inputs.

    Arguments
    ---------
    output_files : list of str
        The files a preparation writes.
    input_paths : list of str
        The files and folders it reads.

    Returns
    -------
    bool
        True when the preparation can be skipped.
    """
    if not all(os.path.isfile(path) for path in output_files):
        return False
    oldest_output = min(os.path.getmtime(path) for path in output_files)
    return oldest_output >= newest_mtime(input_paths)


def write_csv(rows, csv_file, fieldnames=CSV_FIELDS):
    """Writes rows to a csv file atomically.

    The file is first written under a temporary name and then renamed, so an
    interrupted run never leaves a partial csv that looks up to date.

    Arguments
    ---------
    rows : list of dict
        One dict per line, keyed by ``fieldnames``.
    csv_file : str
        The destination file.
    fieldnames : list of str
        The csv header.
    """
    os.makedirs(os.path.dirname(os.path.abspath(csv_file)), exist_ok=True)
    tmp_file = csv_file + ".tmp"
    with open(tmp_file, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp_file, csv_file)
