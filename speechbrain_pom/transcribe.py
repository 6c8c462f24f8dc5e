"""Transcribes audio files with a model exported by the CTC recipes.

Usage:
    python -m speechbrain_pom.transcribe --model FOLDER FILE [FILE ...]

Prints ``FILE<TAB>TRANSCRIPT`` per file on stdout. A file that cannot be read
gets an error line naming it on stderr, the other files are still
transcribed, and the exit code is 1. Audio at another sampling rate than the
model's is resampled.

Authors
* speechbrain-pom contributors 2026
"""

import argparse
import os
import sys

from speechbrain.inference.ASR import EncoderASR


def load_model(model_folder, device="cpu"):
    """Loads an inference folder (offline) as a SpeechBrain ``EncoderASR``.

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
    """
    if not os.path.isfile(os.path.join(model_folder, "hyperparams.yaml")):
        raise FileNotFoundError(f"{model_folder} holds no hyperparams.yaml")
    model_folder = os.path.abspath(model_folder)
    return EncoderASR.from_hparams(
        source=model_folder, savedir=model_folder, run_opts={"device": device}
    )


def transcribe_files(model, audio_files, out=sys.stdout, err=sys.stderr):
    """Writes ``FILE<TAB>TRANSCRIPT`` lines, and an error line per failure.

    Arguments
    ---------
    model : speechbrain.inference.ASR.EncoderASR
        The model.
    audio_files : list of str
        The files to transcribe.
    out, err : file
        Where transcripts and errors go.

    Returns
    -------
    list of str
        The files that could not be transcribed.
    """
    failed = []
    for audio_file in audio_files:
        try:
            # A missing local file would otherwise be looked up online.
            if not os.path.isfile(audio_file):
                raise FileNotFoundError("no such file")
            transcript = model.transcribe_file(os.path.abspath(audio_file))
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
    model = load_model(args.model, args.device)
    failed = transcribe_files(model, args.files)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
