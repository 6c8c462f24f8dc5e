"""Every top-level key of every recipe yaml is used by its training script or
referenced inside the yaml, SpeechBrain's recipe rule (its
``tests/utils/check_yaml.py``): the script and its yaml together are the
whole experiment.

"Used" has the meaning of SpeechBrain's checker: read in the script as
``hparams["key"]``, ``<anything>.hparams.key``, ``hparams.get("key")``,
``getattr(<...>.hparams, "key")`` or ``self.modules.key``, or referenced in
the yaml with ``!ref <key>`` (``<key[item]>`` included). As there, keys run at
load time (``!apply:``) and SpeechBrain's run options (``precision``,
``max_grad_norm``, ... which ``Brain`` reads itself) need no reader. Unlike
there, the script is parsed (comments and strings do not count) and a name
built at run time (``hparams[f"lr_{name}"]``) does not count.
"""

import ast
import dataclasses
import glob
import os
import re

import pytest
from ruamel.yaml import YAML
from speechbrain.core import RunOptions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_YAMLS = sorted(
    glob.glob(os.path.join(ROOT, "recipes", "**", "hparams", "*.yaml"), recursive=True)
)
RUN_OPTIONS = {field.name for field in dataclasses.fields(RunOptions)}
REFERENCE = re.compile(r"<([A-Za-z_]\w*)[\[>]")


def top_level_keys(yaml_file):
    """The top-level keys of a yaml, but those run at load time (!apply:)."""
    with open(yaml_file, encoding="utf-8") as fin:
        document = YAML().load(fin)
    keys = []
    for key, value in document.items():
        tag = getattr(getattr(value, "tag", None), "value", None) or ""
        if not tag.startswith("!apply:"):
            keys.append(key)
    return keys


def referenced_in_yaml(yaml_file):
    """The keys referenced by ``!ref`` expressions in a yaml."""
    referenced = set()
    with open(yaml_file, encoding="utf-8") as fin:
        for line in fin:
            code = line.split("#", 1)[0]
            if "!ref" in code:
                referenced.update(REFERENCE.findall(code))
    return referenced


def _is_hparams(node):
    """``hparams`` or ``<anything>.hparams``."""
    return (isinstance(node, ast.Name) and node.id == "hparams") or (
        isinstance(node, ast.Attribute) and node.attr == "hparams"
    )


def _is_modules(node):
    """``modules`` or ``<anything>.modules``."""
    return (isinstance(node, ast.Name) and node.id == "modules") or (
        isinstance(node, ast.Attribute) and node.attr == "modules"
    )


def _constant_string(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def used_in_script(script_file):
    """The hyperparameter names a training script reads (see the module)."""
    with open(script_file, encoding="utf-8") as fin:
        tree = ast.parse(fin.read(), script_file)
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_hparams(node.value):
            used.add(_constant_string(node.slice))
        elif isinstance(node, ast.Attribute) and (
            _is_hparams(node.value) or _is_modules(node.value)
        ):
            used.add(node.attr)
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            if (
                isinstance(function, ast.Attribute)
                and function.attr == "get"
                and _is_hparams(function.value)
            ):
                used.add(_constant_string(node.args[0]))
            elif (
                isinstance(function, ast.Name)
                and function.id in ("getattr", "hasattr")
                and len(node.args) >= 2
                and _is_hparams(node.args[0])
            ):
                used.add(_constant_string(node.args[1]))
    used.discard(None)
    return used


def unused_keys(yaml_file, script_file):
    """Top-level keys of ``yaml_file`` that nothing uses, sorted."""
    used = referenced_in_yaml(yaml_file) | used_in_script(script_file) | RUN_OPTIONS
    return sorted(key for key in top_level_keys(yaml_file) if key not in used)


def training_script(yaml_file):
    """The training script of a recipe yaml: the train*.py of its recipe."""
    recipe_folder = os.path.dirname(os.path.dirname(yaml_file))
    (script,) = glob.glob(os.path.join(recipe_folder, "train*.py"))
    return script


def test_every_recipe_yaml_is_checked():
    relative = [os.path.relpath(path, ROOT) for path in RECIPE_YAMLS]
    assert len(relative) == 5, relative


@pytest.mark.parametrize(
    "yaml_file", RECIPE_YAMLS, ids=lambda path: os.path.relpath(path, ROOT)
)
def test_every_yaml_key_is_used(yaml_file):
    assert unused_keys(yaml_file, training_script(yaml_file)) == []


def test_checker_finds_unused_keys_and_each_kind_of_use(tmp_path):
    yaml_file = tmp_path / "hparams.yaml"
    yaml_file.write_text(
        "__seed: !apply:torch.manual_seed [1]\n"
        "lr: 0.1  # read as hparams['lr']\n"
        "epochs: 3\n"
        "optimizer: !name:torch.optim.Adam\n"
        "    lr: !ref <lr>\n"
        "encoder: {CNN: 1}\n"
        "CNN: !ref <encoder[CNN]>\n"
        "precision: fp32\n"
        "blank_index: 0\n"
        "augment: True\n"
        "unused: 1\n"
        "mentioned_in_a_comment: 1\n"
        "read_with_a_built_name: 1\n"
    )
    script = tmp_path / "train.py"
    script.write_text(
        "# hparams['mentioned_in_a_comment']\n"
        "name = 'with_a_built_name'\n"
        "print(hparams['optimizer'], hparams.get('epochs'), hparams[f'read_{name}'])\n"
        "print(self.hparams.blank_index, getattr(self.hparams, 'augment'))\n"
        "print(self.modules.CNN)\n"
    )
    assert unused_keys(str(yaml_file), str(script)) == [
        "mentioned_in_a_comment",
        "read_with_a_built_name",
        "unused",
    ]
