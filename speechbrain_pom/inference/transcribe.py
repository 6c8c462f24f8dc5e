"""Transcribes audio files with a model exported by the CTC recipes.

Usage:
    python -m speechbrain_pom.inference.transcribe --model FOLDER FILE [FILE ...]
    python -m speechbrain_pom.inference.transcribe --model FOLDER --streaming \
        --chunk-size C --left-chunks L|none FILE [FILE ...]

Prints ``FILE<TAB>TRANSCRIPT`` per file on stdout. With ``--streaming`` the
file is read in blocks and encoded chunk by chunk (``C`` encoder frames of 40
ms, ``L`` chunks of left context or ``none`` for all the past, as the model
was trained with ``streaming: True``), and the transcript is printed as it
grows; memory does not grow with the file (for PoM and SummaryMixing). The
streamed transcript equals the offline greedy transcript of the whole file
encoded with the same chunks: the front-end (``StreamingFrontEnd``), the
encoder (``StreamingEncoder``) and greedy CTC decoding
(``ctc_greedy_decode_streaming``) are exact chunk by chunk, but for Fbank's
floor at 80 dB below the loudest value of the utterance, which a stream takes
over the audio it holds (the same unless the audio has digital silence).
Streaming needs the model's sampling rate (no resampling). A file that cannot be read,
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
import soundfile
import torch
from ruamel.yaml import YAML
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.inference.ASR import EncoderASR
from speechbrain.nnet.containers import LengthsCapableSequential
from speechbrain.tokenizers.SentencePiece import SentencePieceDecoderStreamingContext
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from speechbrain.utils.filter_analysis import stack_filter_properties

from speechbrain_pom.dataio.ctc_tokenizer import decode_tokens_streaming
from speechbrain_pom.decoders.ctc import (
    CTCGreedyStreamingContext,
    ctc_greedy_decode_streaming,
)
from speechbrain_pom.inference.streaming_encoder import StreamingEncoder
from speechbrain_pom.lobes.streaming_features import StreamingFrontEnd
from speechbrain_pom.utils.parameter_transfer import PretrainedMismatchError

REQUIRED_FILES = ("hyperparams.yaml", "model.ckpt", "normalize.ckpt", "tokenizer.ckpt")
# Keys of hyperparams.yaml without which EncoderASR would load nothing (no
# pretrainer: random weights) or fail later.
REQUIRED_KEYS = ("output_neurons_ctc", "modules", "tokenizer", "decoding_function")
# The last key of the exported hyperparams.yaml: a truncated file lacks it.
LAST_KEY = "pretrainer"
EXIT_FILE_FAILED = 1
EXIT_CANNOT_LOAD = 2
# Audio read per block in streaming mode: 1 s at 16 kHz.
STREAMING_BLOCK_SAMPLES = 16000


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
        keys["output_neurons_ctc"],
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


def make_streaming_encoder(model, dynchunktrain_config):
    """The exact streaming encoder of a loaded inference folder: its
    front-end (filterbanks, normalisation, CNN) through ``StreamingFrontEnd``
    and its Conformer through ``StreamingEncoder``.

    Arguments
    ---------
    model : speechbrain.inference.ASR.EncoderASR
        The model (``load_model``).
    dynchunktrain_config : DynChunkTrainConfig
        Chunk size (encoder frames) and left context (chunks, None for all).

    Returns
    -------
    speechbrain_pom.inference.streaming_encoder.StreamingEncoder
    """
    hparams = model.hparams
    frontend = StreamingFrontEnd(
        LengthsCapableSequential(
            hparams.compute_features, hparams.normalize, hparams.CNN
        ).eval(),
        stack_filter_properties([hparams.compute_features, hparams.CNN]),
    )
    return StreamingEncoder(
        frontend, hparams.enc.transformer, dynchunktrain_config
    ).eval()


def transcribe_file_streaming(
    model, audio_file, dynchunktrain_config, block_samples=STREAMING_BLOCK_SAMPLES
):
    """Transcribes an audio file chunk by chunk, reading it in blocks, so that
    memory does not grow with its length.

    Arguments
    ---------
    model : speechbrain.inference.ASR.EncoderASR
        The model (``load_model``), trained with ``streaming: True``.
    audio_file : str
        The file, at the model's sampling rate (any number of channels).
    dynchunktrain_config : DynChunkTrainConfig
        Chunk size and left context, as in training.
    block_samples : int
        Samples read at a time.

    Yields
    ------
    str
        The text that each encoded chunk adds (possibly empty); together, the
        offline greedy transcript of the file encoded with the same chunks
        (up to Fbank's 80 dB floor, see the module's description).

    Raises
    ------
    ValueError
        If the file does not exist, is at another sampling rate or holds a
        non-finite sample.
    """
    if not os.path.isfile(audio_file):
        raise ValueError("no such file")
    sample_rate = model.hparams.sample_rate
    if soundfile.info(audio_file).samplerate != sample_rate:
        raise ValueError(
            f"streaming needs audio at the model's {sample_rate} Hz; "
            "resample the file, or transcribe it offline"
        )
    encoder = make_streaming_encoder(model, dynchunktrain_config)
    encoder_context = encoder.make_streaming_context()
    decoder_context = CTCGreedyStreamingContext()
    tokenizer_context = SentencePieceDecoderStreamingContext()
    blocks = soundfile.blocks(
        audio_file, blocksize=block_samples, dtype="float32", always_2d=True
    )
    block = next(blocks, None)
    with torch.no_grad():
        while block is not None:
            following = next(blocks, None)  # the last block ends the stream
            audio = torch.from_numpy(block).mean(dim=1)[None].to(model.device)
            if not torch.isfinite(audio).all():
                raise ValueError("the audio holds non-finite samples (NaN or inf)")
            for chunk in encoder(audio, encoder_context, final=following is None):
                (token_ids,) = ctc_greedy_decode_streaming(
                    model.hparams.ctc_lin(model.hparams.back_end_ffn(chunk)),
                    decoder_context,
                    blank_id=model.hparams.blank_index,
                )
                yield decode_tokens_streaming(
                    model.tokenizer, token_ids, tokenizer_context
                )
            block = following


def transcribe_files(model, audio_files, out=None, err=None, streaming_config=None):
    """Writes ``FILE<TAB>TRANSCRIPT`` lines, and an error line per failure.

    Arguments
    ---------
    model : speechbrain.inference.ASR.EncoderASR
        The model.
    audio_files : list of str
        The files to transcribe.
    out, err : file, optional
        Where transcripts and errors go (default: stdout and stderr).
    streaming_config : DynChunkTrainConfig, optional
        Transcribe chunk by chunk with this configuration, each line written
        as its transcript grows; None transcribes each file whole.

    Returns
    -------
    list of str
        The files that could not be transcribed.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    failed = []
    for audio_file in audio_files:
        started = False
        try:
            pieces = (
                [transcribe_file(model, audio_file)]
                if streaming_config is None
                else transcribe_file_streaming(model, audio_file, streaming_config)
            )
            for piece in pieces:
                if not started:
                    print(f"{audio_file}\t", end="", file=out)
                    started = True
                print(piece, end="", file=out, flush=True)
        except Exception as error:  # one bad file must not stop the others
            failed.append(audio_file)
            if started:
                print(file=out, flush=True)
            print(f"error: cannot transcribe {audio_file}: {error}", file=err)
            continue
        if not started:  # a file too short for any chunk
            print(f"{audio_file}\t", end="", file=out)
        print(file=out, flush=True)
    return failed


def left_chunks_argument(value):
    """``--left-chunks``: a number of chunks >= 0, or "none" for all."""
    if value.lower() == "none":
        return None
    chunks = int(value)
    if chunks < 0:
        raise argparse.ArgumentTypeError("give a number >= 0 or none")
    return chunks


def positive_integer_argument(value):
    """A whole number >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("give a whole number >= 1")
    return number


def main(argv=None):
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Transcribe audio files with a speechbrain-pom CTC model."
    )
    parser.add_argument(
        "--model", required=True, help="inference folder written by a CTC recipe"
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="transcribe chunk by chunk, printing the transcript as it grows",
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_integer_argument,
        default=8,
        help="with --streaming: encoder frames (40 ms each) per chunk",
    )
    parser.add_argument(
        "--left-chunks",
        type=left_chunks_argument,
        default=None,
        help="with --streaming: chunks of left context, or none for all the "
        "past (the default; PoM and SummaryMixing only)",
    )
    parser.add_argument("files", nargs="+", help="audio files to transcribe")
    args = parser.parse_args(argv)
    streaming_config = (
        DynChunkTrainConfig(args.chunk_size, args.left_chunks)
        if args.streaming
        else None
    )
    try:
        model = load_model(args.model, args.device)
    except InferenceFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CANNOT_LOAD
    failed = transcribe_files(model, args.files, streaming_config=streaming_config)
    return EXIT_FILE_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
