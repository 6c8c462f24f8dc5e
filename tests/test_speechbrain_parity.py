"""The recipes are SpeechBrain's BEST-RQ and CTC recipes with the token mixer
swapped: every hyperparameter of SpeechBrain's yaml files (recorded in
``fixtures/speechbrain_recipes.json`` with the commit they come from) is in
the project's ``*_mha.yaml`` under the same name with the same value, but for
the differences listed here with their reason; and the encoder that the
project's yaml builds with RelPosMHAXL is SpeechBrain's, weight for weight.
"""

import json
import os

import pytest
import torch
from fixtures.speechbrain_yaml import FIXTURE, read_flat
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.lobes.models.transformer.TransformerASR import (
    EncoderWrapper,
    TransformerASR,
)
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.seed import seed_everything

from speechbrain_pom.utils.parameter_transfer import load_bestrq_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_FILES = {
    "bestrq": "recipes/LibriSpeech/self-supervised-learning/BEST-RQ/"
    "hparams/bestrq_mha.yaml",
    "ctc": "recipes/LibriSpeech/ASR/CTC/hparams/ctc_bestrq_mha.yaml",
}
MIXER_CLASS = (
    "!new:speechbrain_pom.lobes.models.transformer.MixerTransformerASR."
    "MixerTransformerASR"
)
# SpeechBrain's keys that the project's yaml holds otherwise, and why. The
# README's "Differences from SpeechBrain's BEST-RQ recipe" table says the same.
MIXER_LINES = {
    "Transformer": "MixerTransformerASR: TransformerASR, mixer chosen by name",
    "Transformer.attention_type": "`mixer` instead: attention_type cannot name PoM",
}
COMMON = {
    "checkpointer": "SafeCheckpointer: the same files, written crash-safe",
    "output_folder": "holds the mixer's name: two mixers' runs must not collide",
}
DIFFERENCES = {
    "bestrq": {**MIXER_LINES, **COMMON},
    "ctc": {
        **MIXER_LINES,
        **COMMON,
        "attention_type": "`mixer` instead",
        # SpeechBrain's Pretrainer only warns when keys do not match.
        "pretrainer": "pt_model_path is loaded strictly by the script",
        "pretrainer.collect_in": "(the same)",
        "pretrainer.loadables.normalize": "(the same)",
        "pretrainer.loadables.pt_model": "(the same)",
        "pretrainer.paths.normalize": "(the same)",
        "pretrainer.paths.pt_model": "(the same)",
    },
}


def resolved(flat, key):
    """The value of ``key``, through a plain ``!ref <name>`` to a key that
    the project adds (a value that small scale overrides by name)."""
    value = flat.get(key, "<missing>")
    if isinstance(value, str) and value.startswith("!ref <") and value.endswith(">"):
        name = value[len("!ref <") : -1]
        if name in flat and "." not in name:
            return flat[name]
    return value


def speechbrain_hparams():
    with open(FIXTURE, encoding="utf-8") as stream:
        return json.load(stream)["hparams"]


@pytest.mark.parametrize("recipe", sorted(PROJECT_FILES))
def test_yaml_has_speechbrains_keys_and_values(recipe):
    theirs = speechbrain_hparams()[recipe]
    ours = read_flat(os.path.join(ROOT, PROJECT_FILES[recipe]))
    differing = {
        key: (value, ours.get(key, "<missing>"))
        for key, value in theirs.items()
        if value not in (ours.get(key, "<missing>"), resolved(ours, key))
    }
    assert sorted(differing) == sorted(DIFFERENCES[recipe]), differing
    # What replaces attention_type names the mixer.
    assert ours["Transformer"] == MIXER_CLASS
    assert ours["Transformer.mixer"] == "!ref <mixer>"


# SpeechBrain's BEST-RQ.yaml: its CNN and the arguments of its TransformerASR.
SPEECHBRAIN_CNN = dict(
    input_shape=(8, 10, 80),
    num_blocks=2,
    num_layers_per_block=1,
    out_channels=(128, 32),
    kernel_sizes=(3, 3),
    strides=(2, 2),
    residuals=(False, False),
)
SPEECHBRAIN_TRANSFORMER = dict(
    input_size=640,
    tgt_vocab=2048,
    d_model=576,
    nhead=8,
    num_encoder_layers=12,
    num_decoder_layers=0,
    d_ffn=2048,
    dropout=0.1,
    activation=torch.nn.GELU,
    conformer_activation=torch.nn.GELU,
    encoder_module="conformer",
    attention_type="RelPosMHAXL",
    normalize_before=True,
    causal=False,
    layerdrop_prob=0.0,
)


def speechbrain_encoder(**sizes):
    """SpeechBrain's CNN and TransformerASR (``sizes`` override its values)."""
    cnn = ConvolutionFrontEnd(**SPEECHBRAIN_CNN)
    return cnn, TransformerASR(**{**SPEECHBRAIN_TRANSFORMER, **sizes})


def test_pretraining_encoder_is_speechbrains_weight_for_weight(tmp_path):
    path = os.path.join(ROOT, PROJECT_FILES["bestrq"])
    with open(path, encoding="utf-8") as stream:
        ours = load_hyperpyyaml(
            stream, {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
        )
    seed_everything(ours["seed"])
    cnn, transformer = speechbrain_encoder()
    for theirs, mine in ((cnn, ours["CNN"]), (transformer, ours["Transformer"])):
        their_state, my_state = theirs.state_dict(), mine.state_dict()
        assert [(k, v.shape) for k, v in my_state.items()] == [
            (k, v.shape) for k, v in their_state.items()
        ]
        for key, value in my_state.items():
            assert torch.equal(value, their_state[key]), key


# ------------------------------------------------- checkpoints interchange

TINY = {"nhead": 2, "num_encoder_layers": 1, "d_ffn": 64}


def load_recipe_yaml(recipe, tmp_path, **overrides):
    path = os.path.join(ROOT, PROJECT_FILES[recipe])
    placeholders = {"data_folder": str(tmp_path), "output_folder": str(tmp_path)}
    if recipe == "ctc":
        placeholders["pt_model_path"] = None
    with open(path, encoding="utf-8") as stream:
        return load_hyperpyyaml(stream, {**placeholders, **TINY, **overrides})


def speechbrain_modules(d_model):
    """SpeechBrain's pt_model = [CNN, enc] of its CTC recipe, at a tiny size."""
    cnn, transformer = speechbrain_encoder(d_model=d_model, **TINY)
    return torch.nn.ModuleList([cnn, EncoderWrapper(transformer)])


def test_pretraining_checkpoint_loads_into_speechbrains_ctc_model(tmp_path):
    hparams = load_recipe_yaml("bestrq", tmp_path, d_model=32, cb_vocab=64)
    hparams["checkpointer"].save_checkpoint()
    (checkpoint,) = [p for p in (tmp_path / "save").iterdir() if p.is_dir()]
    state = torch.load(checkpoint / "model.ckpt", weights_only=True)
    # SpeechBrain's layout: model.ckpt is [CNN, wrapper]; the quantiser and
    # the head are recoverables of their own.
    assert {key.split(".")[0] for key in state} == {"0", "1"}
    for name in ("quantizer", "linear", "normalize", "noam_scheduler", "counter"):
        assert (checkpoint / f"{name}.ckpt").is_file(), name
    pt_model = speechbrain_modules(d_model=32)
    pt_model.load_state_dict(state, strict=True)
    for key, value in pt_model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_speechbrains_pretraining_checkpoint_fine_tunes_here(tmp_path):
    speechbrain_save = tmp_path / "speechbrain_bestrq"
    model = speechbrain_modules(d_model=32)
    normalize = InputNormalization(norm_type="sentence")
    Checkpointer(
        speechbrain_save, recoverables={"model": model, "normalize": normalize}
    ).save_checkpoint()
    hparams = load_recipe_yaml("ctc", tmp_path / "ctc", pt_model_output_dim=32)
    load_bestrq_encoder(
        str(speechbrain_save), hparams["CNN"], hparams["enc"], hparams["normalize"]
    )
    mine = torch.nn.ModuleList([hparams["CNN"], hparams["enc"]]).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(mine[key], value), key
