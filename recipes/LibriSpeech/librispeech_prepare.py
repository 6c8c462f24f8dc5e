"""Data preparation for corpora in the LibriSpeech layout.

Writes one SpeechBrain csv file per split (``<save_folder>/<split>.csv``) with
the columns ``ID, duration, wav, spk_id, wrd``. Audio paths start with
``$data_root`` so that the yaml can point them at the data folder
(``DynamicItemDataset.from_csv(..., replacements={"data_root": data_folder})``).

Everything is validated before any csv is written, and problems raise a
``DataPreparationError`` that names the files (or, with ``skip_bad_files``, the
utterances are skipped with a warning and a count):

- pairing: an audio file without a transcript line, a transcript line without
  an audio file or without text, the same utterance ID twice in a split;
- text: transcripts must be UTF-8 (a byte-order mark is fine) and, when an
  ``alphabet`` is given, hold only its characters once normalised (upper case,
  single spaces);
- audio: every file is decoded once: unreadable, corrupt, truncated, empty,
  non-finite (NaN, inf), not 16 kHz mono, or shorter than ``min_duration``.
  What decoding found is cached in ``<save_folder>/audio_checks.json`` (keyed by
  path, size and modification time), so a second run decodes only new or
  changed files and rewrites no csv whose content is unchanged;
- a split with no usable utterance is always an error; dangling symlinks and
  symlink loops in the corpus are reported in a warning and never followed.

The arguments of SpeechBrain's own ``prepare_librispeech`` are accepted too, so
that either script can serve the other's recipes.

Authors
 * speechbrain-pom contributors
"""

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
    find_files,
    list_some,
    read_text_lines,
    write_csv,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
NO_TRANSCRIPT = "audio file with no transcript line"
NO_AUDIO = "transcript line with no audio file"
NO_TEXT = "transcript line with no text"
DUPLICATE_ID = "utterance ID found twice in the split"
OUTSIDE_ALPHABET = "transcript with characters outside the alphabet"


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=("train-clean-100",),
    dev_splits=("dev-clean",),
    te_splits=("test-clean",),
    select_n_sentences=None,
    merge_lst=(),
    merge_name=None,
    create_lexicon=False,
    skip_prep=False,
    skip_bad_files=False,
    alphabet=None,
    min_duration=MIN_DURATION,
):
    """Prepares the csv files of a LibriSpeech-layout corpus.

    The arguments up to ``skip_prep`` are those of SpeechBrain's
    ``prepare_librispeech``, in the same order.

    Arguments
    ---------
    data_folder : str
        The LibriSpeech folder, holding one folder per split.
    save_folder : str
        Where the csv files (and the audio check cache) are written.
    tr_splits, dev_splits, te_splits : list of str
        Names of the train, dev and test split folders.
    select_n_sentences : int or list of int, optional
        Keep only the first n utterances (sorted by ID) of each split: one
        number for every split, or one per split in the order train, dev,
        test. Only these are decoded.
    merge_lst : list of str
        Splits (among those prepared) whose rows are also written together
        into ``<save_folder>/<merge_name>``.
    merge_name : str, optional
        File name of the merged csv, required with ``merge_lst``.
    create_lexicon : bool
        Not supported (SpeechBrain's version downloads a G2P lexicon); True
        raises a ValueError.
    skip_prep : bool
        If True, do nothing.
    skip_bad_files : bool
        If True, utterances with a problem are skipped with a warning and a
        count instead of raising an error. Missing split folders, non-UTF-8
        transcripts and splits left with no utterance are always errors.
    alphabet : str or list of str, optional
        The characters a normalised transcript may hold (for a character
        tokenizer: the yaml's ``char_alphabet``, space included). A transcript
        with another character is a problem naming the file and line. None
        checks nothing.
    min_duration : float
        Audio shorter than this (seconds) is a problem; the default, 0.25 s,
        is explained in ``speechbrain_pom.dataio.validation.MIN_DURATION``.

    Returns
    -------
    dict
        ``{split: csv_file}`` for all requested splits.

    Raises
    ------
    DataPreparationError
        When a split folder is missing, a transcript is not UTF-8, a split has
        no usable utterance, or (without ``skip_bad_files``) some utterances
        have a problem; the message names the files.
    ValueError
        When an argument cannot be honoured; the message names it.

    Example
    -------
    >>> prepare_librispeech("data/LibriSpeech", "results/save")  # doctest: +SKIP
    {'train-clean-100': 'results/save/train-clean-100.csv', ...}
    """
    splits = list(dict.fromkeys([*tr_splits, *dev_splits, *te_splits]))
    n_sentences = _sentences_per_split(select_n_sentences, splits)
    _check_options(splits, merge_lst, merge_name, create_lexicon)
    csv_files = {split: os.path.join(save_folder, f"{split}.csv") for split in splits}
    if skip_prep:
        return csv_files
    _check_split_folders(data_folder, splits)

    rows_per_split, problems = {}, []
    for split in splits:
        rows_per_split[split], split_problems = _scan_split(
            data_folder,
            split,
            alphabet=alphabet,
            min_duration=min_duration,
            n_sentences=n_sentences[split],
            cache_file=os.path.join(save_folder, AUDIO_CACHE_NAME),
        )
        problems += split_problems
    if problems and not skip_bad_files:
        raise DataPreparationError(
            f"Cannot prepare {data_folder} (no csv file was written):\n"
            f"{describe_problems(problems)}\n"
            "Fix these files, or pass skip_bad_files=True to skip them."
        )
    if problems:
        logger.warning(
            "Skipping %d bad utterance(s) in %s:\n%s",
            len(problems),
            data_folder,
            describe_problems(problems, limit=3),
        )
    _check_not_empty(data_folder, rows_per_split, problems)

    outputs = {csv_files[split]: rows for split, rows in rows_per_split.items()}
    if merge_lst:
        merged_rows = [row for split in merge_lst for row in rows_per_split[split]]
        _check_unique_ids(merged_rows, merge_name)
        outputs[os.path.join(save_folder, merge_name)] = merged_rows
    for csv_file, rows in outputs.items():
        if write_csv(rows, csv_file):
            logger.info("Wrote %s (%d utterances).", csv_file, len(rows))
        else:
            logger.info("%s is up to date (%d utterances).", csv_file, len(rows))
    return csv_files


def normalize_transcript(text):
    """Normalises a LibriSpeech transcript: NFC, upper case, single spaces.

    Arguments
    ---------
    text : str
        The words of a transcript line.

    Returns
    -------
    str
        The normalised transcript.

    Example
    -------
    >>> normalize_transcript("  hello\\tWorld ")
    'HELLO WORLD'
    """
    return " ".join(unicodedata.normalize("NFC", text).upper().split())


def _sentences_per_split(select_n_sentences, splits):
    """``{split: n or None}`` from an int, a list (one per split) or None."""
    if select_n_sentences is None or isinstance(select_n_sentences, int):
        return dict.fromkeys(splits, select_n_sentences)
    if len(select_n_sentences) != len(splits):
        raise ValueError(
            f"select_n_sentences has {len(select_n_sentences)} value(s) for "
            f"{len(splits)} split(s) ({', '.join(splits)}): give one number, "
            "or one per split."
        )
    return dict(zip(splits, select_n_sentences, strict=True))


def _check_options(splits, merge_lst, merge_name, create_lexicon):
    """Raises a ValueError naming an argument that cannot be honoured."""
    if create_lexicon:
        raise ValueError(
            "create_lexicon=True is not supported: it downloads the LibriSpeech "
            "G2P lexicon; use SpeechBrain's own librispeech_prepare.py for it."
        )
    if merge_lst and not merge_name:
        raise ValueError("merge_lst needs merge_name (the merged csv file name).")
    unknown = [split for split in merge_lst if split not in splits]
    if unknown:
        raise ValueError(
            f"merge_lst names split(s) that are not prepared: {list_some(unknown)} "
            f"(prepared: {', '.join(splits)})."
        )


def _check_split_folders(data_folder, splits):
    """Raises an error naming the split folders that do not exist."""
    if not os.path.isdir(data_folder):
        raise DataPreparationError(f"Data folder not found: {data_folder}")
    missing = [
        os.path.join(data_folder, split)
        for split in splits
        if not os.path.isdir(os.path.join(data_folder, split))
    ]
    if missing:
        present = sorted(os.listdir(data_folder))
        raise DataPreparationError(
            f"Split folder(s) not found: {list_some(missing)}. "
            f"{data_folder} contains: {list_some(present) or 'nothing'}."
        )


def _check_not_empty(data_folder, rows_per_split, problems):
    """Raises an error naming the splits left without any utterance."""
    empty = [split for split, rows in rows_per_split.items() if not rows]
    if empty:
        raise DataPreparationError(
            "No usable utterance in split(s) "
            f"{list_some(os.path.join(data_folder, split) for split in empty)} "
            f"({len(problems)} utterance(s) skipped in all): no csv file was "
            "written."
        )


def _check_unique_ids(rows, csv_name):
    """Raises an error naming the IDs that a merged csv would hold twice."""
    seen, repeated = set(), []
    for row in rows:
        if row["ID"] in seen:
            repeated.append(row["ID"])
        seen.add(row["ID"])
    if repeated:
        raise DataPreparationError(
            f"The merged csv {csv_name} would hold these IDs twice (they are in "
            f"two merged splits): {list_some(repeated)}."
        )


def _read_transcripts(transcript_files, alphabet):
    """Reads and normalises the transcript lines of a split.

    Returns ``{utterance_id: [(text, "<file> line <n>", outside), ...]}``
    (one entry per line that holds the ID; ``outside``: its characters that
    are not in the alphabet) and a list of ``(reason, name)`` problems.
    """
    transcripts, problems = {}, []
    for transcript_file in transcript_files:
        for line_number, line in read_text_lines(transcript_file):
            utterance_id, _, text = line.strip().partition(" ")
            if not utterance_id:
                continue  # blank line
            where = f"{transcript_file} line {line_number}"
            text = normalize_transcript(text)
            if not text:
                problems.append((NO_TEXT, f"{utterance_id} in {where}"))
                continue
            outside = characters_outside(text, alphabet)
            if outside:
                problems.append((OUTSIDE_ALPHABET, f"{where}: {outside!r}"))
            transcripts.setdefault(utterance_id, []).append((text, where, outside))
    return transcripts, problems


def _scan_split(data_folder, split, alphabet, min_duration, n_sentences, cache_file):
    """Builds the csv rows of one split and lists its problems."""
    split_folder = os.path.join(data_folder, split)
    files, link_problems = find_files(split_folder)
    if link_problems:
        # Not an utterance problem: the links may point at nothing needed.
        logger.warning(
            "Not followed in %s:\n%s", split_folder, describe_problems(link_problems)
        )
    transcripts, problems = _read_transcripts(
        [path for path in files if path.endswith(".trans.txt")], alphabet
    )
    audio_files = {}
    for path in files:
        if path.endswith(".flac"):
            utterance_id = os.path.basename(path)[: -len(".flac")]
            audio_files.setdefault(utterance_id, []).append(path)

    usable_ids = []
    for utterance_id in sorted(set(audio_files) | set(transcripts)):
        paths = audio_files.get(utterance_id, [])
        lines = transcripts.get(utterance_id, [])
        if len(paths) > 1 or len(lines) > 1:
            places = paths + [where for _, where, _ in lines]
            problems.append((DUPLICATE_ID, f"{utterance_id} ({', '.join(places)})"))
        elif not lines:
            problems.append((NO_TRANSCRIPT, paths[0]))
        elif not paths:
            problems.append((NO_AUDIO, f"{utterance_id} in {lines[0][1]}"))
        elif not lines[0][2]:  # characters outside the alphabet: reported above
            usable_ids.append(utterance_id)
    usable_ids = usable_ids[:n_sentences]

    audio_paths = [audio_files[utterance_id][0] for utterance_id in usable_ids]
    checks = check_audio_files(audio_paths, SAMPLE_RATE, min_duration, cache_file)
    rows = []
    for utterance_id, audio_file, (duration, problem) in zip(
        usable_ids, audio_paths, checks, strict=True
    ):
        if problem:
            problems.append((f"audio file {problem}", audio_file))
            continue
        relative_path = os.path.relpath(audio_file, data_folder).replace(os.sep, "/")
        rows.append(
            {
                "ID": utterance_id,
                "duration": duration,
                "wav": f"$data_root/{relative_path}",
                "spk_id": utterance_id.split("-")[0],
                "wrd": transcripts[utterance_id][0][0],
            }
        )
    return rows, problems
