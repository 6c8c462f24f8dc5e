"""Strict loading of pre-trained weights (a BEST-RQ encoder for fine-tuning,
an inference folder's model) and the re-initialisation of top layers.

SpeechBrain's ``Pretrainer`` only warns about parameters that do not match; a
fine-tuning run started from the wrong checkpoint would then silently train
from a partly random encoder, and an inference folder would transcribe with
one. ``load_bestrq_encoder`` and ``strict_parameter_transfer`` refuse instead.

Authors
* speechbrain-pom contributors 2026
"""

import os

import torch
from speechbrain.utils.checkpoints import METAFNAME
from speechbrain.utils.logger import get_logger

from speechbrain_pom.utils.checkpoints import SafeCheckpointer
from speechbrain_pom.utils.state_dicts import compare_state_dicts, describe_mismatch

logger = get_logger(__name__)

# Order of the modules in the ModuleList saved as ``model.ckpt`` by the
# BEST-RQ recipe, as by SpeechBrain's: [CNN, wrapper] (the quantiser and the
# linear layer are separate recoverables).
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


def strict_parameter_transfer(module, path):
    """Loads a state_dict file into a module, refusing any mismatch.

    A drop-in for SpeechBrain's ``torch_parameter_transfer`` (which only
    warns), given to a ``Pretrainer`` as a custom hook (see the CTC recipes'
    ``inference/hyperparams.yaml``).

    Arguments
    ---------
    module : torch.nn.Module
        The model.
    path : str
        The checkpoint file.

    Raises
    ------
    PretrainedMismatchError
        If the keys or shapes of the file differ from the module's.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.ckpt")
    >>> torch.save(torch.nn.Linear(2, 3).state_dict(), path)
    >>> strict_parameter_transfer(torch.nn.Linear(2, 4), path)
    Traceback (most recent call last):
    ...
    speechbrain_pom...PretrainedMismatchError: ... 2 shape mismatches: ...
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected, wrong_shapes = compare_state_dicts(module.state_dict(), state)
    if not wrong_shapes:
        # Keys as the module's own load hooks see them: they drop the fixed
        # tables that older checkpoints hold.
        result = module.load_state_dict(state, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    problem = describe_mismatch(
        path, "the model of its hyperparams.yaml", missing, unexpected, wrong_shapes
    )
    if problem is not None:
        raise PretrainedMismatchError(problem)


def reinitialise_top_layers(wrapper, count):
    """Draws new initial weights for the top ``count`` layers of a pre-trained
    encoder: the top of a masked-prediction model is specialised to its
    pretext task (arXiv 2107.04734). Parameters of modules without
    ``reset_parameters`` (none in the default PoM) keep their values.

    Arguments
    ---------
    wrapper : speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper
        The encoder, as the recipes build it.
    count : int
        How many layers, from the top; 0 changes nothing.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper
    >>> from speechbrain_pom.lobes.models.transformer.MixerTransformerASR import (
    ...     MixerTransformerASR,
    ... )
    >>> wrapper = EncoderWrapper(MixerTransformerASR(
    ...     tgt_vocab=1, input_size=16, d_model=16, nhead=2, d_ffn=32,
    ...     num_encoder_layers=2, num_decoder_layers=0,
    ...     encoder_module="conformer", normalize_before=True))
    >>> bottom, top = wrapper.transformer.encoder.layers
    >>> before = [p.clone() for p in (*bottom.parameters(), *top.parameters())]
    >>> reinitialise_top_layers(wrapper, 1)
    >>> after = [*bottom.parameters(), *top.parameters()]
    >>> n = len(list(bottom.parameters()))
    >>> all(torch.equal(a, b) for a, b in zip(before[:n], after[:n]))
    True
    >>> all(torch.equal(a, b) for a, b in zip(before[n:], after[n:]))
    False
    """
    layers = wrapper.transformer.encoder.layers
    if not 0 <= count <= len(layers):
        raise ValueError(
            f"reinit_top_layers is {count}; the encoder has {len(layers)} layers"
        )
    if count:
        logger.info(f"The top {count} encoder layer(s) start from new weights.")
    for layer in layers[len(layers) - count :]:
        for module in layer.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def load_bestrq_encoder(pt_model_path, cnn, wrapper, normalize):
    """Loads the CNN front-end, the encoder and the input normalisation of a
    BEST-RQ checkpoint, strictly.

    ``model.ckpt`` holds SpeechBrain's BEST-RQ layout, ``[CNN, wrapper]``
    (keys ``0.*`` and ``1.*``), the ``pt_model`` of SpeechBrain's CTC recipe;
    every key must match the model, name and shape.

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
    expected = _expected_state(cnn, wrapper)
    problem = describe_mismatch(
        checkpoint_file,
        "the encoder of this recipe",
        *compare_state_dicts(expected, state),
    )
    if problem is not None:
        raise PretrainedMismatchError(problem)
    for module, prefix in ((cnn, CNN_PREFIX), (wrapper, WRAPPER_PREFIX)):
        module.load_state_dict(
            {
                key[len(prefix) :]: value
                for key, value in state.items()
                if key.startswith(prefix)
            }
        )
    normalize._load_statistics_dict(statistics)
    return folder
