"""Data preparation for a CommonVoice release.

Reads ``{train,dev,test}.tsv`` and ``clips/`` of one language folder and writes
``train.csv``, ``dev.csv`` and ``test.csv`` with the SpeechBrain columns
``ID, duration, wav, spk_id, wrd`` (``wav`` starts with ``$data_root/clips/``
and ``spk_id`` is the ``client_id``). Sentences are normalised per language
(see ``normalize_text``).

Rows that cannot be used (missing clip, empty sentence after normalisation,
unreadable or empty audio) are skipped and reported: a warning with the counts
and the first file names, a ``<split>_skipped.txt`` file in the save folder,
and the returned report. A missing folder or tsv file is an error naming it.
Clips are not required to be 16 kHz (CommonVoice clips are usually 48 kHz mp3
and the recipe resamples them); durations come from the file headers.

Authors
 * speechbrain-pom contributors
"""

import csv
import logging
import os
import unicodedata

from speechbrain_pom.data.validation import (
    DataPreparationError,
    check_audio_file,
    describe_problems,
    group_by_reason,
    list_some,
    outputs_up_to_date,
    write_csv,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
MISSING_CLIP = "missing clip"
EMPTY_SENTENCE = "empty sentence"
# Typographic apostrophes and look-alikes, all written "'" in transcripts.
APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\u00b4`\u2032", "'"))


def normalize_text(sentence, language="en"):
    """Normalises a CommonVoice sentence into an ASR transcript.

    The text is unicode normalised (NFKC: non-breaking spaces become spaces,
    accents are composed), typographic apostrophes become ``'``, letters are
    uppercased, and everything that is not a letter or an apostrophe inside a
    word (punctuation, quotes such as « », digits, hyphens) becomes a space.
    For English ("en") only the letters A-Z are kept, accents being removed
    (café -> CAFE); other languages, French ("fr") included, keep all letters,
    accented ones included.

    Arguments
    ---------
    sentence : str
        The sentence as written in the tsv file.
    language : str
        The language code.

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
    """
    text = unicodedata.normalize("NFKC", sentence).translate(APOSTROPHES)
    if language == "en":
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(char for char in decomposed if not unicodedata.combining(char))
    is_letter = _is_english_letter if language == "en" else str.isalpha
    text = "".join(
        char if is_letter(char) or char == "'" else " " for char in text.upper()
    )
    words = (word.strip("'") for word in text.split())
    return " ".join(word for word in words if word)


def _is_english_letter(char):
    return "A" <= char <= "Z"


def prepare_common_voice(
    data_folder,
    save_folder,
    language="en",
    train_tsv_file=None,
    dev_tsv_file=None,
    test_tsv_file=None,
    skip_prep=False,
):
    """Prepares the csv files of a CommonVoice language folder.

    The preparation is skipped when the csv files exist and are newer than the
    tsv files.

    Arguments
    ---------
    data_folder : str
        The language folder of the release (holding the tsv files and clips/).
    save_folder : str
        Where the csv files (and the ``<split>_skipped.txt`` reports) go.
    language : str
        Language code, selects the text normalisation.
    train_tsv_file, dev_tsv_file, test_tsv_file : str, optional
        The tsv files (default: ``<data_folder>/<split>.tsv``).
    skip_prep : bool
        If True, do nothing.

    Returns
    -------
    dict or None
        ``{split: {"csv_file": str, "n_rows": int, "skipped": {reason: [clip,
        ...]}}}``, or None when the preparation was skipped.

    Raises
    ------
    DataPreparationError
        When the data folder, its clips folder or a tsv file is missing, or a
        tsv file lacks a required column; the message names it.

    Example
    -------
    >>> prepare_common_voice("data/CommonVoice/en", "results/save")  # doctest: +SKIP
    """
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
    if outputs_up_to_date(csv_files.values(), tsv_files.values()):
        logger.info(
            "CommonVoice csv files in %s are up to date, skipping.", save_folder
        )
        return None

    scanned = {
        split: _scan_tsv(tsv_files[split], clips_folder, language) for split in SPLITS
    }
    report = {}
    for split, (rows, problems) in scanned.items():
        write_csv(rows, csv_files[split])
        _report_skipped(split, problems, len(rows), save_folder)
        report[split] = {
            "csv_file": csv_files[split],
            "n_rows": len(rows),
            "skipped": group_by_reason(problems),
        }
        logger.info("Wrote %s (%d utterances).", csv_files[split], len(rows))
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


def _scan_tsv(tsv_file, clips_folder, language):
    """Builds the csv rows of one tsv file and lists the skipped clips."""
    rows, problems = [], []
    with open(tsv_file, encoding="utf-8", newline="") as stream:
        # Sentences may hold quote characters: no csv quoting in these files.
        reader = csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing_columns = set(REQUIRED_COLUMNS) - set(reader.fieldnames or ())
        if missing_columns:
            raise DataPreparationError(
                f"{tsv_file} lacks the column(s) {sorted(missing_columns)}."
            )
        for line in reader:
            clip = line["path"] or ""
            clip_file = os.path.join(clips_folder, clip)
            if not clip or not os.path.isfile(clip_file):
                problems.append((MISSING_CLIP, clip))
                continue
            text = normalize_text(line["sentence"] or "", language)
            if not text:
                problems.append((EMPTY_SENTENCE, clip))
                continue
            duration, problem = check_audio_file(clip_file)
            if problem:
                problems.append((f"audio {problem}", clip))
                continue
            rows.append(
                {
                    "ID": os.path.splitext(clip)[0],
                    "duration": duration,
                    "wav": f"$data_root/clips/{clip}",
                    "spk_id": line["client_id"],
                    "wrd": text,
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
