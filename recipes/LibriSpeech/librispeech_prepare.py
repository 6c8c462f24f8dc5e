"""Data preparation for corpora in the LibriSpeech layout.

Writes one SpeechBrain csv file per split (``<save_folder>/<split>.csv``) with
the columns ``ID, duration, wav, spk_id, wrd``. Audio paths start with
``$data_root`` so that the yaml can point them at the data folder
(``DynamicItemDataset.from_csv(..., replacements={"data_root": data_folder})``).

Everything is validated before anything is written: missing split folders,
audio files without a transcript line, transcript lines without an audio file,
and unreadable, empty or non-16 kHz audio files raise a ``DataPreparationError``
that names the files (or are skipped with a warning, see ``skip_bad_files``).

Authors
 * speechbrain-pom contributors
"""

import glob
import logging
import os

from speechbrain_pom.data.validation import (
    DataPreparationError,
    check_audio_file,
    describe_problems,
    list_some,
    outputs_up_to_date,
    write_csv,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
NO_TRANSCRIPT = "audio file with no transcript line"
NO_AUDIO = "transcript line with no audio file"
NO_TEXT = "transcript line with no text"


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=("train-clean-100",),
    dev_splits=("dev-clean",),
    te_splits=("test-clean",),
    skip_prep=False,
    skip_bad_files=False,
):
    """Prepares the csv files of a LibriSpeech-layout corpus.

    The preparation is skipped when all csv files exist and are newer than
    every file and folder of the splits.

    Arguments
    ---------
    data_folder : str
        The LibriSpeech folder, holding one folder per split.
    save_folder : str
        Where the csv files are written.
    tr_splits, dev_splits, te_splits : list of str
        Names of the train, dev and test split folders.
    skip_prep : bool
        If True, do nothing.
    skip_bad_files : bool
        If True, utterances with a problem are skipped with a warning instead
        of raising an error. Missing split folders are always an error.

    Returns
    -------
    dict
        ``{split: csv_file}`` for all requested splits.

    Raises
    ------
    DataPreparationError
        When a split folder is missing or (without ``skip_bad_files``) when
        some utterances have a problem; the message names the files.

    Example
    -------
    >>> prepare_librispeech("data/LibriSpeech", "results/save")  # doctest: +SKIP
    {'train-clean-100': 'results/save/train-clean-100.csv', ...}
    """
    splits = list(dict.fromkeys([*tr_splits, *dev_splits, *te_splits]))
    csv_files = {split: os.path.join(save_folder, f"{split}.csv") for split in splits}
    if skip_prep:
        return csv_files
    split_folders = [os.path.join(data_folder, split) for split in splits]
    _check_split_folders(data_folder, splits)
    if outputs_up_to_date(csv_files.values(), split_folders):
        logger.info(
            "LibriSpeech csv files in %s are up to date, skipping.", save_folder
        )
        return csv_files

    rows_per_split, problems = {}, []
    for split in splits:
        rows_per_split[split], split_problems = _scan_split(data_folder, split)
        problems += split_problems
    if problems and not skip_bad_files:
        raise DataPreparationError(
            f"Cannot prepare {data_folder} (nothing was written):\n"
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
    for split, rows in rows_per_split.items():
        write_csv(rows, csv_files[split])
        logger.info("Wrote %s (%d utterances).", csv_files[split], len(rows))
    return csv_files


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


def _read_transcripts(split_folder):
    """Reads the transcript lines of a split.

    Returns ``{utterance_id: (text, transcript_file)}`` and a list of
    ``(reason, name)`` problems.
    """
    transcripts, problems = {}, []
    pattern = os.path.join(split_folder, "**", "*.trans.txt")
    for transcript_file in sorted(glob.glob(pattern, recursive=True)):
        with open(transcript_file, encoding="utf-8") as stream:
            for line in stream:
                utterance_id, _, text = line.strip().partition(" ")
                if not utterance_id:
                    continue  # blank line
                if not text.strip():
                    problems.append((NO_TEXT, f"{utterance_id} in {transcript_file}"))
                    continue
                transcripts[utterance_id] = (" ".join(text.split()), transcript_file)
    return transcripts, problems


def _scan_split(data_folder, split):
    """Builds the csv rows of one split and lists its problems."""
    split_folder = os.path.join(data_folder, split)
    transcripts, problems = _read_transcripts(split_folder)
    audio_files = {
        os.path.basename(path)[: -len(".flac")]: path
        for path in glob.glob(
            os.path.join(split_folder, "**", "*.flac"), recursive=True
        )
    }
    for utterance_id in sorted(set(audio_files) - set(transcripts)):
        problems.append((NO_TRANSCRIPT, audio_files[utterance_id]))
    for utterance_id in sorted(set(transcripts) - set(audio_files)):
        transcript_file = transcripts[utterance_id][1]
        problems.append((NO_AUDIO, f"{utterance_id} in {transcript_file}"))

    rows = []
    for utterance_id in sorted(set(transcripts) & set(audio_files)):
        audio_file = audio_files[utterance_id]
        duration, problem = check_audio_file(audio_file, SAMPLE_RATE)
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
                "wrd": transcripts[utterance_id][0],
            }
        )
    return rows, problems
