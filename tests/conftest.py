"""Shared pytest fixtures.

``tiny_librispeech`` and ``tiny_commonvoice`` give a tiny synthetic corpus
(generated offline once per test session) in the LibriSpeech and CommonVoice
layouts. ``load_recipe_module`` imports a recipe file (recipe folders are not
packages).
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
from speechbrain.nnet.containers import LengthsCapableSequential
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.filter_analysis import stack_filter_properties

from tools.tiny_corpus import generate_corpus, make_commonvoice_layout

RECIPES_FOLDER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes")
TINY_CORPUS_SIZES = {"n_train": 24, "n_dev": 6, "n_test": 6}


def load_recipe_module(relative_path):
    """Imports a Python file of the recipes folder as a module.

    Arguments
    ---------
    relative_path : str
        Path relative to ``recipes/``, e.g. "LibriSpeech/librispeech_prepare.py".

    Returns
    -------
    module
        The imported module.
    """
    path = os.path.join(RECIPES_FOLDER, relative_path)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark_script(script, out_dir, *options, timeout):
    """Runs a benchmark script into ``out_dir``, asserting that it succeeds.

    Arguments
    ---------
    script : str or pathlib.Path
        The script.
    out_dir : str or pathlib.Path
        Its output folder (``--out``).
    *options : str
        Its other command-line options.
    timeout : float
        Seconds before the run is stopped (and the test fails).

    Returns
    -------
    str
        Its standard output.
    """
    completed = subprocess.run(
        [sys.executable, str(script), "--out", str(out_dir), *options],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.fixture(scope="session")
def tiny_librispeech(tmp_path_factory):
    """The LibriSpeech root folder (str) of a tiny corpus: 24/6/6 utterances."""
    out_dir = tmp_path_factory.mktemp("tiny_corpus")
    return generate_corpus(out_dir, **TINY_CORPUS_SIZES, seed=1234, show_progress=False)


@pytest.fixture(scope="session")
def tiny_commonvoice(tiny_librispeech, tmp_path_factory):
    """The CommonVoice language folder (str) built from ``tiny_librispeech``."""
    out_dir = tmp_path_factory.mktemp("tiny_commonvoice")
    return make_commonvoice_layout(
        tiny_librispeech, out_dir, lang="en", show_progress=False
    )


@pytest.fixture(scope="session")
def librispeech_prepare():
    """The ``recipes/LibriSpeech/librispeech_prepare.py`` module."""
    return load_recipe_module("LibriSpeech/librispeech_prepare.py")


@pytest.fixture(scope="session")
def common_voice_prepare():
    """The ``recipes/CommonVoice/common_voice_prepare.py`` module."""
    return load_recipe_module("CommonVoice/common_voice_prepare.py")


@pytest.fixture(scope="module")
def tiny_frontend():
    """The recipes' front-end (Fbank, global normalisation, 4x CNN) with a smaller
    CNN, in eval mode, and its filter properties: (module, properties)."""
    torch.manual_seed(0)
    fbank = Fbank(n_mels=20)
    normalize = InputNormalization(norm_type="global")
    normalize(fbank(torch.randn(2, 16000)), torch.ones(2))  # global statistics
    cnn = ConvolutionFrontEnd(
        input_shape=[None, None, 20],
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=[8, 4],
        kernel_sizes=[3, 3],
        strides=[2, 2],
        residuals=[False, False],
    )
    module = LengthsCapableSequential(fbank, normalize, cnn).eval()
    return module, stack_filter_properties([fbank, cnn])
