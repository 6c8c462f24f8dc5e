"""The small CPU setting (hparams/small_scale.yaml) overrides the recipes."""

import os

import pytest
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from tools.experiments import (
    BESTRQ_DIR,
    CTC_DIR,
    as_arguments,
    load_small_scale,
    yaml_value,
)

# The recipe yaml files that each part of small_scale.yaml overrides.
RECIPES = {
    "bestrq": [
        os.path.join(BESTRQ_DIR, "hparams", name)
        for name in ("bestrq_pom.yaml", "bestrq_mha.yaml")
    ],
    "ctc": [
        os.path.join(CTC_DIR, "hparams", name)
        for name in ("ctc_bestrq_pom.yaml", "ctc_bestrq_mha.yaml")
    ],
}
# The sections of each part that a run combines, in order.
COMBINATIONS = {
    "bestrq": [("pretraining",), ("pretraining", "quick")],
    "ctc": [
        ("finetuning", "pretrained"),
        ("finetuning", "scratch"),
        ("finetuning", "scratch", "quick"),
        ("finetuning", "pretrained", "probe"),
    ],
}
# The values of the recipes' !PLACEHOLDER keys.
PLACEHOLDERS = {"bestrq": {}, "ctc": {"pt_model_path": "null"}}


def test_small_scale_has_the_parts_and_sections_that_runs_combine():
    small_scale = load_small_scale()
    assert set(small_scale) == set(RECIPES)
    for part, combinations in COMBINATIONS.items():
        used = {section for sections in combinations for section in sections}
        assert set(small_scale[part]) == used


@pytest.mark.parametrize(
    "part, recipe",
    [(part, recipe) for part, recipes in RECIPES.items() for recipe in recipes],
)
def test_every_override_reaches_the_recipe(part, recipe, tmp_path):
    """Each key either is a key of the recipe yaml (HyperPyYAML refuses an
    override it does not have, so a renamed key fails here) or a SpeechBrain
    run option such as optimizer_step_limit; either way its value arrives."""
    small_scale = load_small_scale()
    for sections in COMBINATIONS[part]:
        overrides = {}
        for section in sections:
            overrides.update(small_scale[part][section])
        arguments = as_arguments(
            {
                **overrides,
                **PLACEHOLDERS[part],
                "data_folder": str(tmp_path),
                "output_folder": str(tmp_path / "out"),
            }
        )
        _, run_opts, yaml_overrides = sb.parse_arguments([recipe, *arguments])
        with open(recipe, encoding="utf-8") as stream:
            hparams = load_hyperpyyaml(stream, yaml_overrides)
        for key, value in overrides.items():
            if key in run_opts.overridden_args:
                assert str(run_opts[key]) == str(value), key
            elif isinstance(value, dict):
                for inner, inner_value in value.items():
                    assert hparams[key][inner] == inner_value, (key, inner)
            elif key == "test_csv":
                assert hparams[key] == [str(tmp_path / "out" / "test-clean.csv")]
            else:
                assert hparams[key] == value, key


def test_overrides_become_yaml_on_the_command_line():
    assert as_arguments({"test_dataloader_options": {"num_workers": 0}}) == [
        "--test_dataloader_options",
        "{num_workers: 0}",
    ]
    assert yaml_value({"pom": {"formulation": "C", "expand": 2}}) == (
        "{pom: {formulation: C, expand: 2}}"
    )
    assert yaml_value([True, 0.5]) == "[True, 0.5]"
