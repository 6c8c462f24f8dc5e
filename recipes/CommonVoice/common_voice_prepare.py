"""Data preparation for a CommonVoice release.

Reads ``{train,dev,test}.tsv`` and ``clips/`` of one language folder and writes
``train.csv``, ``dev.csv`` and ``test.csv`` with the SpeechBrain columns
``ID, duration, wav, spk_id, wrd`` (``wav`` starts with ``$data_root/clips/``
and ``spk_id`` is the ``client_id``). Sentences are normalised per language
(see ``normalize_text``).

Rows that cannot be used are skipped and reported (a warning with the counts
and the first names, a ``<split>_skipped.txt`` file in the save folder, and the
returned report), or, with ``skip_bad_files=False``, raise an error that names
them. A row cannot be used when:

- its clip is missing, listed twice (in one tsv, or in two tsv files), or its
  path is absolute or leaves ``clips/``;
- its line does not have the header's number of columns, even when read as a
  spreadsheet export (a quoted field holding a tab is parsed as one field);
- its normalised sentence is empty, holds digits (numbers are not spelled out:
  dropping them would leave a transcript that does not match the audio), or,
  when an ``alphabet`` is given, another character;
- its clip does not decode to finite, mono audio of at least ``min_duration``
  (every clip is decoded once; the results are cached in
  ``<save_folder>/audio_checks.json``, keyed by path, size and modification
  time).

A missing folder or tsv file, a tsv that is not UTF-8 (a byte-order mark is
fine) or lacks a column, and a split left with no usable row are errors naming
the file. Clips are not required to be 16 kHz (CommonVoice clips are usually
48 kHz mp3 and the recipe resamples them). The arguments of SpeechBrain's own
``prepare_common_voice`` are accepted too, in the same order.

Authors
 * speechbrain-pom contributors
"""

import csv
import logging
import os
import unicodedata

from speechbrain_pom.dataio.validation import (
    AUDIO_CACHE_NAME,
    MIN_DURATION,
    DataPreparationError,
    characters_outside,
    check_audio_files,
    describe_problems,
    group_by_reason,
    list_some,
    read_text_lines,
    write_csv,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
MISSING_CLIP = "missing clip"
EMPTY_SENTENCE = "empty sentence"
DIGITS = "digits in the sentence (numbers are not spelled out)"
OUTSIDE_ALPHABET = "characters outside the alphabet"
LISTED_TWICE = "clip listed twice"
OUTSIDE_CLIPS = "path outside clips/"
WRONG_COLUMNS = "wrong number of columns"
# Typographic apostrophes and look-alikes, all written "'" in transcripts.
APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\u00b4`\u2032", "'"))


def normalize_text(sentence, language="en", accented_letters=None):
    """Normalises a CommonVoice sentence into an ASR transcript.

    The text is unicode normalised (NFKC: non-breaking spaces become spaces,
    accents are composed), typographic apostrophes become ``'``, letters are
    uppercased, and everything that is not a letter, a digit or an apostrophe
    inside a word (punctuation, quotes such as « », hyphens) becomes a space.
    Digits are kept, so that the caller can see them (the preparation skips
    such rows). Accents are removed (café -> CAFE) for English by default, or
    for every language with ``accented_letters=False``; English keeps only the
    letters A-Z unless ``accented_letters=True``.

    Arguments
    ---------
    sentence : str
        The sentence as written in the tsv file.
    language : str
        The language code.
    accented_letters : bool, optional
        True keeps accented letters, False removes accents, None (default)
        removes them for English only.

    Returns
    -------
    str
        The normalised transcript (may be empty).

    Example
    -------
    >>> normalize_text("The cat’s   hat, isn't it?")
    "THE CAT'S HAT ISN'T IT"
    >>> normalize_text("« L’été à Paris », dit-il.", language="fr")
    "L'ÉTÉ À PARIS DIT IL"
    >>> normalize_text("L’été", language="fr", accented_letters=False)
    "L'ETE"
    """
    if accented_letters is None:
        accented_letters = language != "en"
    text = unicodedata.normalize("NFKC", sentence).translate(APOSTROPHES)
    if not accented_letters:
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(char for char in decomposed if not unicodedata.combining(char))
        text = unicodedata.normalize("NFC", text)
    is_letter = (
        _is_english_letter if language == "en" and not accented_letters else str.isalpha
    )
    text = "".join(
        char if is_letter(char) or char.isdigit() or char == "'" else " "
        for char in text.upper()
    )
    words = (word.strip("'") for word in text.split())
    return " ".join(word for word in words if word)


def _is_english_letter(char):
    return "A" <= char <= "Z"


def prepare_common_voice(
    data_folder,
    save_folder,
    train_tsv_file=None,
    dev_tsv_file=None,
    test_tsv_file=None,
    accented_letters=None,
    language="en",
    skip_prep=False,
    convert_to_wav=False,
    skip_bad_files=True,
    alphabet=None,
    min_duration=MIN_DURATION,
):
    """Prepares the csv files of a CommonVoice language folder.

    The arguments up to ``convert_to_wav`` are those of SpeechBrain's
    ``prepare_common_voice``, in the same order. A csv file whose content would
    not change is not rewritten, and clips decoded by an earlier run are not
    decoded again unless they changed.

    Arguments
    ---------
    data_folder : str
        The language folder of the release (holding the tsv files and clips/).
    save_folder : str
        Where the csv files, the ``<split>_skipped.txt`` reports and the audio
        check cache go.
    train_tsv_file, dev_tsv_file, test_tsv_file : str, optional
        The tsv files (default: ``<data_folder>/<split>.tsv``).
    accented_letters : bool, optional
        True keeps accented letters, False removes accents (as SpeechBrain's
        preparation does), None (default) removes them for English only.
    language : str
        Language code, selects the text normalisation.
    skip_prep : bool
        If True, do nothing.
    convert_to_wav : bool
        Not supported (SpeechBrain's version shells out to ffmpeg); True raises
        a ValueError. The recipe decodes the mp3 clips directly.
    skip_bad_files : bool
        If True (default: every CommonVoice release has some unusable rows),
        unusable rows are skipped and reported; if False, they raise an error.
    alphabet : str or list of str, optional
        The characters a normalised sentence may hold (space included); None
        checks nothing.
    min_duration : float
        Clips shorter than this (seconds) are unusable; the default, 0.25 s,
        is explained in ``speechbrain_pom.dataio.validation.MIN_DURATION``.

    Returns
    -------
    dict or None
        ``{split: {"csv_file": str, "n_rows": int, "skipped": {reason: [clip,
        ...]}}}``, or None with ``skip_prep``.

    Raises
    ------
    DataPreparationError
        When the data folder, its clips folder or a tsv file is missing, a tsv
        file is not UTF-8 or lacks a required column, a split has no usable
        row, or (without ``skip_bad_files``) some rows are unusable; the
        message names the file.
    ValueError
        When an argument cannot be honoured; the message names it.

    Example
    -------
    >>> prepare_common_voice("data/CommonVoice/en", "results/save")  # doctest: +SKIP
    """
    if convert_to_wav:
        raise ValueError(
            "convert_to_wav=True is not supported: this preparation does not "
            "call ffmpeg, and the recipe reads the mp3 clips directly. Convert "
            "the clips beforehand, or use SpeechBrain's common_voice_prepare.py."
        )
    if skip_prep:
        return None
    tsv_files = {
        "train": train_tsv_file,
        "dev": dev_tsv_file,
        "test": test_tsv_file,
    }
    tsv_files = {
        split: path or os.path.join(data_folder, f"{split}.tsv")
        for split, path in tsv_files.items()
    }
    clips_folder = os.path.join(data_folder, "clips")
    _check_inputs(data_folder, clips_folder, tsv_files)
    csv_files = {split: os.path.join(save_folder, f"{split}.csv") for split in SPLITS}

    text_options = {
        "language": language,
        "accented_letters": accented_letters,
        "alphabet": alphabet,
    }
    candidates, problems, first_listed, read_before = {}, {}, {}, {}
    for split in SPLITS:
        # One tsv given for two splits (dev as test) is reused, not a duplicate.
        tsv_key = os.path.realpath(tsv_files[split])
        if tsv_key not in read_before:
            read_before[tsv_key] = _read_tsv(
                tsv_files[split], clips_folder, first_listed, text_options
            )
        candidates[split] = read_before[tsv_key][0]
        problems[split] = list(read_before[tsv_key][1])
    rows = {}
    for split in SPLITS:
        rows[split], audio_problems = _check_clips(
            candidates[split],
            clips_folder,
            min_duration,
            os.path.join(save_folder, AUDIO_CACHE_NAME),
        )
        problems[split] += audio_problems
    all_problems = [problem for split in SPLITS for problem in problems[split]]
    if all_problems and not skip_bad_files:
        raise DataPreparationError(
            f"Cannot prepare {data_folder} (no csv file was written):\n"
            f"{describe_problems(all_problems)}\n"
            "Fix these rows, or pass skip_bad_files=True to skip them."
        )
    empty = [tsv_files[split] for split in SPLITS if not rows[split]]
    if empty:
        raise DataPreparationError(
            f"No usable row in {list_some(empty)} ({len(all_problems)} row(s) "
            f"skipped in all):\n{describe_problems(all_problems)}"
        )

    report = {}
    for split in SPLITS:
        if write_csv(rows[split], csv_files[split]):
            logger.info("Wrote %s (%d utterances).", csv_files[split], len(rows[split]))
        else:
            logger.info("%s is up to date.", csv_files[split])
        _report_skipped(split, problems[split], len(rows[split]), save_folder)
        report[split] = {
            "csv_file": csv_files[split],
            "n_rows": len(rows[split]),
            "skipped": group_by_reason(problems[split]),
        }
    return report


def _check_inputs(data_folder, clips_folder, tsv_files):
    """Raises an error naming the missing folder or tsv files."""
    if not os.path.isdir(data_folder):
        raise DataPreparationError(f"CommonVoice folder not found: {data_folder}")
    if not os.path.isdir(clips_folder):
        raise DataPreparationError(
            f"CommonVoice clips folder not found: {clips_folder}"
        )
    missing = [path for path in tsv_files.values() if not os.path.isfile(path)]
    if missing:
        present = sorted(
            name for name in os.listdir(data_folder) if name.endswith(".tsv")
        )
        raise DataPreparationError(
            f"CommonVoice tsv file(s) not found: {list_some(missing)}. "
            f"{data_folder} contains: {list_some(present) or 'no tsv file'}."
        )


def _split_tsv_line(line, n_columns):
    """The fields of a tsv line, or None when they cannot be told apart.

    CommonVoice writes no quoting (a sentence may hold a lone ``"``), so a line
    is first split at every tab. A line with too many fields may come from a
    spreadsheet export that quotes a field holding a tab: it is read again with
    csv quoting.
    """
    fields = line.split("\t")
    if len(fields) != n_columns:
        fields = next(csv.reader([line], delimiter="\t"))
    return fields if len(fields) == n_columns else None


def _read_tsv(tsv_file, clips_folder, first_listed, text_options):
    """Reads the rows of one tsv file and checks their paths and sentences.

    ``first_listed`` maps each clip seen so far (in any split) to where it was
    first listed; it is updated. Returns the candidate rows (``ID, wav, spk_id,
    wrd`` and the clip file) and the ``(reason, name)`` problems.
    """
    lines = read_text_lines(tsv_file)
    _, header_line = next(lines, (0, ""))
    header = header_line.split("\t")
    missing_columns = set(REQUIRED_COLUMNS) - set(header)
    if missing_columns:
        raise DataPreparationError(
            f"{tsv_file} lacks the column(s) {sorted(missing_columns)}."
        )
    candidates, problems = [], []
    for line_number, line in lines:
        if not line.strip():
            continue
        where = f"{os.path.basename(tsv_file)} line {line_number}"
        fields = _split_tsv_line(line, len(header))
        if fields is None:
            problems.append((WRONG_COLUMNS, where))
            continue
        row = dict(zip(header, fields, strict=True))
        clip = row["path"]
        clip_file = os.path.join(clips_folder, clip)
        if not clip:
            problems.append((MISSING_CLIP, where))
            continue
        if os.path.isabs(clip) or os.path.normpath(clip).split(os.sep)[0] == os.pardir:
            problems.append((OUTSIDE_CLIPS, f"{clip} ({where})"))
            continue
        if clip in first_listed:
            first = first_listed[clip]
            problems.append((LISTED_TWICE, f"{clip} ({where}, first on {first})"))
            continue
        first_listed[clip] = where
        if not os.path.isfile(clip_file):
            problems.append((MISSING_CLIP, clip))
            continue
        text = normalize_text(
            row["sentence"], text_options["language"], text_options["accented_letters"]
        )
        outside = characters_outside(text, text_options["alphabet"])
        if not text:
            problems.append((EMPTY_SENTENCE, clip))
        elif any(char.isdigit() for char in text):
            problems.append((DIGITS, f"{clip} ({row['sentence']!r})"))
        elif outside:
            problems.append((OUTSIDE_ALPHABET, f"{clip} ({outside!r})"))
        else:
            candidates.append(
                {
                    "ID": os.path.splitext(clip)[0],
                    "wav": f"$data_root/clips/{clip}",
                    "spk_id": row["client_id"],
                    "wrd": text,
                    "clip": clip,
                }
            )
    return candidates, problems


def _check_clips(candidates, clips_folder, min_duration, cache_file):
    """Decodes the clips of the candidate rows; returns the csv rows and the
    ``(reason, clip)`` problems."""
    clip_files = [os.path.join(clips_folder, row["clip"]) for row in candidates]
    checks = check_audio_files(
        clip_files, min_duration=min_duration, cache_file=cache_file
    )
    rows, problems = [], []
    for candidate, (duration, problem) in zip(candidates, checks, strict=True):
        if problem:
            problems.append((f"audio {problem}", candidate["clip"]))
            continue
        rows.append(
            {
                "ID": candidate["ID"],
                "duration": duration,
                "wav": candidate["wav"],
                "spk_id": candidate["spk_id"],
                "wrd": candidate["wrd"],
            }
        )
    return rows, problems


def _report_skipped(split, problems, n_rows, save_folder):
    """Logs the skipped rows and lists them in ``<split>_skipped.txt``."""
    skipped_file = os.path.join(save_folder, f"{split}_skipped.txt")
    if not problems:
        # A report left by an earlier run would now be misleading.
        if os.path.exists(skipped_file):
            os.remove(skipped_file)
        return
    with open(skipped_file, "w", encoding="utf-8") as stream:
        stream.writelines(f"{clip}\t{reason}\n" for reason, clip in problems)
    logger.warning(
        "%s: skipped %d of %d rows (listed in %s):\n%s",
        split,
        len(problems),
        len(problems) + n_rows,
        skipped_file,
        describe_problems(problems, limit=3),
    )
