"""The modules meant for an upstream pull request pass SpeechBrain's own lint
settings and stay within the Python it supports (3.8)."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEECHBRAIN_RUFF = os.path.join(ROOT, "tools", "ruff_speechbrain.toml")
UPSTREAM_MODULES = [
    "speechbrain_pom/nnet/pom.py",
    "speechbrain_pom/nnet/summary_mixing.py",
    "speechbrain_pom/utils/dynamic_chunk_mean.py",
    "speechbrain_pom/decoders/ctc.py",
]
# Keyword arguments that Python 3.8 does not have: (function, keyword).
NEWER_KEYWORDS = {("zip", "strict")}
NEWER_METHODS = {"removeprefix", "removesuffix"}


def ruff(*arguments):
    """Runs the ruff of this environment from the repository root."""
    executable = shutil.which("ruff", path=os.path.dirname(sys.executable))
    return subprocess.run(
        [executable or "ruff", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_upstream_modules_pass_speechbrains_ruff_check():
    # FA: PEP 604/585 annotations need `from __future__ import annotations`
    # on Python 3.8.
    result = ruff(
        "check", "--config", SPEECHBRAIN_RUFF, "--extend-select", "FA",
        *UPSTREAM_MODULES,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_upstream_modules_are_formatted_as_speechbrain_formats():
    result = ruff("format", "--check", "--config", SPEECHBRAIN_RUFF, *UPSTREAM_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_project_lint_leaves_them_to_speechbrains_settings():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fin:
        settings = fin.read()
    exclusions = settings[settings.index("extend-exclude") :].split("]")[0]
    for module in UPSTREAM_MODULES:
        assert f'"{module}"' in exclusions


@pytest.mark.parametrize("module", UPSTREAM_MODULES)
def test_upstream_module_is_python_38(module):
    with open(os.path.join(ROOT, module), encoding="utf-8") as fin:
        tree = ast.parse(fin.read(), feature_version=(3, 8))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            for keyword in node.keywords:
                assert (name, keyword.arg) not in NEWER_KEYWORDS, (module, node.lineno)
            assert name not in NEWER_METHODS, (module, node.lineno)
