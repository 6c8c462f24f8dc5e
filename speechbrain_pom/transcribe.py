"""Transcribes audio files with a model exported by the CTC recipes.

Usage:
    python -m speechbrain_pom.transcribe --model FOLDER FILE [FILE ...]

Prints ``FILE<TAB>TRANSCRIPT`` per file on stdout. A file that cannot be read,
or whose samples are not all finite (NaN, inf), gets an error line naming it
on stderr, the other files are still transcribed, and the exit code is 1. An
inference folder that cannot be loaded (a missing or damaged file, weights of
another mixer or size) or a device that is not there is one error line and
exit code 2. Audio at another sampling rate than the model's is resampled.

Loading an inference folder runs the code its ``hyperparams.yaml`` names:
load only folders you trust.

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import os
import sys

import sentencepiece
import torch
from ruamel.yaml import YAML
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.inference.ASR import EncoderASR

from speechbrain_pom.pretrained import PretrainedMismatchError

REQUIRED_FILES = ("hyperparams.yaml", "model.ckpt", "normalize.ckpt", "tokenizer.ckpt")
# Keys of hyperparams.yaml without which EncoderASR would load nothing (no
# pretrainer: random weights) or fail later.
REQUIRED_KEYS = ("output_neurons", "modules", "tokenizer", "decoding_function")
# The last key of the exported hyperparams.yaml: a truncated file lacks it.
LAST_KEY = "pretrainer"
EXIT_FILE_FAILED = 1
EXIT_CANNOT_LOAD = 2


class InferenceFolderError(RuntimeError):
    """The inference folder or the device cannot be used; the message is one
    line that names the cause."""


def _one_line(error):
    """The first line of an exception's message, with its type."""
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0]}"


def check_device(device):
    """Refuses a CUDA device on a machine without one.

    Arguments
    ---------
    device : str
        A torch device ("cpu", "cuda", "cuda:1").

    Raises
    ------
    InferenceFolderError
        If it names CUDA and there is no CUDA GPU.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceFolderError(
            f"--device {device}: no CUDA GPU is available on this machine "
            "(use --device cpu)"
        )


def _check_files(model_folder):
    """Refuses a folder with a missing, empty or unreadable file."""
    if not os.path.isdir(model_folder):
        raise InferenceFolderError(f"{model_folder} is not a folder")
    for name in REQUIRED_FILES:
        path = os.path.join(model_folder, name)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise InferenceFolderError(
                f"{path} is missing or empty: not a complete inference folder"
            )
    yaml_file = os.path.join(model_folder, "hyperparams.yaml")
    try:
        with open(yaml_file, encoding="utf-8") as fin:
            document = YAML().load(fin)
    except Exception as error:  # a damaged yaml fails in many ways
        raise InferenceFolderError(
            f"{yaml_file} cannot be read: {_one_line(error)}"
        ) from None
    keys = document if isinstance(document, dict) else {}
    absent = [key for key in (*REQUIRED_KEYS, LAST_KEY) if key not in keys]
    if absent:
        raise InferenceFolderError(
            f"{yaml_file} is incomplete (truncated?): no {', '.join(absent)}"
        )
    for name in ("model.ckpt", "normalize.ckpt"):
        path = os.path.join(model_folder, name)
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file fails in many ways
            raise InferenceFolderError(
                f"{path} cannot be read (truncated or damaged?): {_one_line(error)}"
            ) from None
    tokenizer_class = getattr(getattr(keys["tokenizer"], "tag", None), "value", "")
    _check_tokenizer(
        os.path.join(model_folder, "tokenizer.ckpt"),
        tokenizer_class,
        keys["output_neurons"],
    )


def _check_tokenizer(path, tokenizer_class, output_neurons):
    """Refuses a tokenizer file that cannot be read, or whose vocabulary is
    not the size of the model's output."""
    try:
        if tokenizer_class.endswith("CTCTextEncoder"):
            encoder = CTCTextEncoder()
            encoder.load(path)
            size = len(encoder)
        else:
            processor = sentencepiece.SentencePieceProcessor()
            processor.load(path)
            size = processor.vocab_size()
    except Exception as error:  # a damaged file fails in many ways
        raise InferenceFolderError(
            f"{path} cannot be read (truncated or damaged?): {_one_line(error)}"
        ) from None
    if size != output_neurons:
        raise InferenceFolderError(
            f"{path} holds {size} tokens but the model outputs {output_neurons} "
            "(truncated, or of another model?)"
        )


def load_model(model_folder, device="cpu"):
    """Loads an inference folder (offline) as a SpeechBrain ``EncoderASR``,
    after checking it.

    Arguments
    ---------
    model_folder : str
        Folder written by the CTC recipes (``hyperparams.yaml`` + checkpoints).
    device : str
        Torch device to run on.

    Returns
    -------
    speechbrain.inference.ASR.EncoderASR
        The model.

    Raises
    ------
    InferenceFolderError
        With one line naming the cause: no such device, a missing, empty,
        truncated or damaged file, weights of another mixer or size (the
        mismatched keys listed), a tokenizer of another size.
    """
    check_device(device)
    model_folder = os.path.abspath(model_folder)
    _check_files(model_folder)
    try:
        model = EncoderASR.from_hparams(
            source=model_folder, savedir=model_folder, run_opts={"device": device}
        )
    except PretrainedMismatchError as error:
        raise InferenceFolderError(str(error)) from None
    except Exception as error:  # whatever the loaders raise, in one line
        raise InferenceFolderError(
            f"cannot load {model_folder}: {_one_line(error)}"
        ) from None
    return model


def transcribe_file(model, audio_file):
    """The transcript of one audio file.

    Arguments
    ---------
    model : speechbrain.inference.ASR.EncoderASR
        The model.
    audio_file : str
        The file.

    Returns
    -------
    str
        The transcript.

    Raises
    ------
    ValueError
        If the file does not exist or holds a non-finite sample.
    """
    # A missing local file would otherwise be looked up online.
    if not os.path.isfile(audio_file):
        raise ValueError("no such file")
    waveform = model.load_audio(os.path.abspath(audio_file))
    if not torch.isfinite(waveform).all():
        raise ValueError("the audio holds non-finite samples (NaN or inf)")
    words, _ = model.transcribe_batch(waveform.unsqueeze(0), torch.tensor([1.0]))
    return str(words[0])


def transcribe_files(model, audio_files, out=None, err=None):
    """Writes ``FILE<TAB>TRANSCRIPT`` lines, and an error line per failure.

    Arguments
    ---------
    model : speechbrain.inference.ASR.EncoderASR
        The model.
    audio_files : list of str
        The files to transcribe.
    out, err : file, optional
        Where transcripts and errors go (default: stdout and stderr).

    Returns
    -------
    list of str
        The files that could not be transcribed.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    failed = []
    for audio_file in audio_files:
        try:
            transcript = transcribe_file(model, audio_file)
        except Exception as error:  # one bad file must not stop the others
            failed.append(audio_file)
            print(f"error: cannot transcribe {audio_file}: {error}", file=err)
            continue
        print(f"{audio_file}\t{transcript}", file=out, flush=True)
    return failed


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Transcribe audio files with a speechbrain-pom CTC model."
    )
    parser.add_argument(
        "--model", required=True, help="inference folder written by a CTC recipe"
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("files", nargs="+", help="audio files to transcribe")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, args.device)
    except InferenceFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CANNOT_LOAD
    failed = transcribe_files(model, args.files)
    return EXIT_FILE_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
