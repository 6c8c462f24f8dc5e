"""Shared pytest fixtures.

``tiny_librispeech`` and ``tiny_commonvoice`` give a tiny synthetic corpus
(generated offline once per test session) in the LibriSpeech and CommonVoice
layouts. ``load_recipe_module`` imports a recipe file (recipe folders are not
packages).
"""

import importlib.util
import os

import pytest

from speechbrain_pom.data.tiny_corpus import generate_corpus, make_commonvoice_layout

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
