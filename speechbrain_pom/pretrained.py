"""Strict loading of a BEST-RQ pre-trained encoder for fine-tuning.

SpeechBrain's ``Pretrainer`` only warns about parameters that do not match; a
fine-tuning run started from the wrong checkpoint would then silently train
from a partly random encoder. ``load_bestrq_encoder`` refuses instead.

Authors
* speechbrain-pom contributors 2026
"""

import os

import torch
from speechbrain.utils.checkpoints import METAFNAME
from speechbrain.utils.logger import get_logger

from speechbrain_pom.checkpoints import SafeCheckpointer

logger = get_logger(__name__)

# Order of the modules in the ModuleList saved as ``model.ckpt`` by the
# BEST-RQ recipe: [CNN, wrapper, Quantizer, linear].
CNN_PREFIX = "0."
WRAPPER_PREFIX = "1."
MODEL_FILE = "model.ckpt"
NORMALIZE_FILE = "normalize.ckpt"


class PretrainedMismatchError(RuntimeError):
    """The pre-trained checkpoint cannot be loaded into the model."""


def candidate_checkpoint_folders(pt_model_path):
    """The BEST-RQ checkpoint folders to load from, best first.

    Arguments
    ---------
    pt_model_path : str
        Either one ``CKPT+*`` folder (holding ``model.ckpt``) or the save
        folder of a pre-training experiment, whose checkpoints are ranked by
        validation loss (lowest first), then those without one, newest first.

    Returns
    -------
    list of str
        The checkpoint folders.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or holds no checkpoint.
    """
    if not os.path.isdir(pt_model_path):
        raise FileNotFoundError(
            f"pt_model_path {pt_model_path!r} is not a folder: give the save "
            "folder of a BEST-RQ experiment or one of its CKPT+ folders."
        )
    if os.path.isfile(os.path.join(pt_model_path, MODEL_FILE)) or os.path.isfile(
        os.path.join(pt_model_path, METAFNAME)
    ):
        return [pt_model_path]
    checkpointer = SafeCheckpointer(pt_model_path)
    ranked = checkpointer.find_checkpoints(min_key="loss")
    ranked += [c for c in checkpointer.find_checkpoints() if c not in ranked]
    if not ranked:
        raise FileNotFoundError(
            f"No BEST-RQ checkpoint in {pt_model_path!r}: expected {MODEL_FILE} "
            "or CKPT+ folders holding it."
        )
    return [str(checkpoint.path) for checkpoint in ranked]


def _read_checkpoint(folder):
    """The encoder weights and input statistics of a checkpoint folder."""
    state = torch.load(
        os.path.join(folder, MODEL_FILE), map_location="cpu", weights_only=True
    )
    statistics = torch.load(
        os.path.join(folder, NORMALIZE_FILE), map_location="cpu", weights_only=True
    )
    return state, statistics


def _expected_state(cnn, wrapper):
    """The pre-training state_dict keys (and tensors) of the CNN and encoder."""
    expected = {CNN_PREFIX + key: value for key, value in cnn.state_dict().items()}
    expected.update(
        {WRAPPER_PREFIX + key: value for key, value in wrapper.state_dict().items()}
    )
    return expected


def _describe_mismatch(checkpoint_file, expected, found):
    """A message listing the missing, unexpected and wrongly shaped keys, or
    None when the checkpoint matches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shapes = [
        f"{key}: checkpoint {tuple(found[key].shape)}, "
        f"model {tuple(expected[key].shape)}"
        for key in sorted(set(found) & set(expected))
        if found[key].shape != expected[key].shape
    ]
    if not (missing or unexpected or wrong_shapes):
        return None
    lines = [
        f"The BEST-RQ checkpoint {checkpoint_file} does not match the encoder "
        "of this recipe (check d_model, num_encoder_layers, mixer, ...):"
    ]
    for title, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", wrong_shapes),
    ):
        if keys:
            lines.append(f"  {len(keys)} {title}: " + ", ".join(keys[:20]))
            if len(keys) > 20:
                lines.append(f"  ... and {len(keys) - 20} more {title}")
    return "\n".join(lines)


def load_bestrq_encoder(pt_model_path, cnn, wrapper, normalize):
    """Loads the CNN front-end, the encoder and the input normalisation of a
    BEST-RQ checkpoint, strictly.

    The quantiser and the codebook-prediction head of the checkpoint are
    ignored; every other key must match the model, name and shape.

    Arguments
    ---------
    pt_model_path : str
        A BEST-RQ save folder or one of its ``CKPT+*`` folders (see
        ``candidate_checkpoint_folders``); a checkpoint that cannot be read
        is skipped with a warning for the next best one.
    cnn : torch.nn.Module
        The convolutional front-end.
    wrapper : torch.nn.Module
        The encoder (``EncoderWrapper`` of the Conformer).
    normalize : speechbrain.processing.features.InputNormalization
        The input normalisation, receives the pre-training statistics.

    Returns
    -------
    str
        The checkpoint folder that was loaded.

    Raises
    ------
    FileNotFoundError
        If there is no readable checkpoint at ``pt_model_path``.
    PretrainedMismatchError
        If the checkpoint's keys or shapes differ from the model's.
    """
    folders = candidate_checkpoint_folders(pt_model_path)
    for folder in folders:
        try:
            state, statistics = _read_checkpoint(folder)
            break
        except Exception as error:  # a damaged file fails in many ways
            # A checkpoint broken by a crash: the next best one will do.
            logger.warning(f"Skipping checkpoint {folder}: it cannot be read ({error})")
    else:
        raise FileNotFoundError(
            f"No readable BEST-RQ checkpoint in {pt_model_path!r} (tried "
            f"{len(folders)}; see the warnings above)."
        )
    checkpoint_file = os.path.join(folder, MODEL_FILE)
    found = {
        key: value
        for key, value in state.items()
        if key.startswith((CNN_PREFIX, WRAPPER_PREFIX))
    }
    expected = _expected_state(cnn, wrapper)
    problem = _describe_mismatch(checkpoint_file, expected, found)
    if problem is not None:
        raise PretrainedMismatchError(problem)
    for module, prefix in ((cnn, CNN_PREFIX), (wrapper, WRAPPER_PREFIX)):
        module.load_state_dict(
            {
                key[len(prefix) :]: value
                for key, value in found.items()
                if key.startswith(prefix)
            }
        )
    normalize._load_statistics_dict(statistics)
    return folder
