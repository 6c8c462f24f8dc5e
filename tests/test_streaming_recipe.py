"""Streaming end to end: BEST-RQ and CTC fine-tuning with ``streaming: True``
(Dynamic Chunk Training) on the tiny corpus, then the exported folder
transcribed chunk by chunk (``transcribe --streaming`` and SpeechBrain's
``StreamingASR``).

One tiny BEST-RQ pre-training and one CTC fine-tuning run per module.
"""

import os

import pytest
from test_ctc_recipe import (
    BESTRQ_FOLDER,
    CTC_FOLDER,
    command_line,
    run_ctc,
    run_recipe,
    skip_prep_overrides,
)

STREAMING = {"streaming": True}


@pytest.fixture(scope="module")
def given_csvs(tiny_librispeech, librispeech_prepare, tmp_path_factory):
    """csv files prepared once, for runs with ``skip_prep``."""
    folder = tmp_path_factory.mktemp("given_csvs")
    librispeech_prepare.prepare_librispeech(
        data_folder=tiny_librispeech,
        save_folder=str(folder),
        tr_splits=["train-clean-100"],
        dev_splits=["dev-clean"],
        te_splits=["test-clean"],
    )
    return folder, None  # the shape skip_prep_overrides takes


@pytest.fixture(scope="module")
def streaming_bestrq(tiny_librispeech, given_csvs, tmp_path_factory):
    """The output folder of one epoch of tiny BEST-RQ with streaming: True."""
    output_folder = str(tmp_path_factory.mktemp("bestrq_streaming"))
    arguments = command_line(
        "train.py",
        "hparams/bestrq_pom.yaml",
        tiny_librispeech,
        output_folder,
        number_of_epochs=1,
        cb_vocab=64,
        **STREAMING,
        **skip_prep_overrides(given_csvs),
    )
    result = run_recipe(BESTRQ_FOLDER, arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_folder


@pytest.fixture(scope="module")
def streaming_ctc(tiny_librispeech, given_csvs, streaming_bestrq, tmp_path_factory):
    """The output folder of one epoch of tiny CTC fine-tuning with
    streaming: True, from the streaming BEST-RQ model."""
    output_folder = str(tmp_path_factory.mktemp("ctc_streaming"))
    folder, _ = given_csvs
    result = run_ctc(
        tiny_librispeech,
        output_folder,
        pt_model_path=os.path.join(streaming_bestrq, "save"),
        test_csv=f"[{folder / 'test-clean.csv'}]",
        **STREAMING,
        **skip_prep_overrides(given_csvs),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output_folder


def logged_valid_losses(output_folder):
    """The validation losses of a recipe's train_log.txt."""
    with open(os.path.join(output_folder, "train_log.txt"), encoding="utf-8") as fin:
        return [
            float(line.split("valid loss: ")[1].split(",")[0])
            for line in fin
            if "valid loss: " in line
        ]


def test_streaming_recipes_train_validate_and_export(streaming_bestrq, streaming_ctc):
    # Validation ran chunked (the sampler's valid_config) and gave a number.
    for output_folder in (streaming_bestrq, streaming_ctc):
        (loss,) = logged_valid_losses(output_folder)
        assert loss == loss and loss > 0
    assert os.path.isfile(os.path.join(streaming_ctc, "wer_test-clean.txt"))


@pytest.mark.parametrize(
    "recipe_folder, script, hparams_file, recipe_overrides",
    [
        (BESTRQ_FOLDER, "train.py", "hparams/bestrq_pom.yaml", {}),
        (
            CTC_FOLDER,
            "train_with_bestrq.py",
            "hparams/ctc_bestrq_pom.yaml",
            {"pt_model_path": "null"},
        ),
    ],
    ids=["bestrq", "ctc"],
)
def test_hypermixing_refuses_to_stream_before_any_work(
    recipe_folder, script, hparams_file, recipe_overrides, tiny_librispeech, tmp_path
):
    output_folder = tmp_path / "out"
    arguments = command_line(
        script,
        hparams_file,
        tiny_librispeech,
        str(output_folder),
        mixer="hypermixing",
        **recipe_overrides,
        **STREAMING,
    )
    result = run_recipe(recipe_folder, arguments)
    assert result.returncode != 0
    assert "mixer 'hypermixing' cannot train with chunks or stream" in result.stderr
    assert not list(output_folder.glob("**/CKPT+*"))
