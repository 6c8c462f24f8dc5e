"""The mixer comparison: its low-resource corpus and its driver, end to end."""

import csv
import json
import os
import subprocess
import sys

import soundfile as sf

from tools.tiny_corpus import (
    MANIFEST_NAME,
    UNLABELLED_SPLIT,
    generate_lowresource_corpus,
    labelled_split_name,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "benchmarks", "compare_mixers.py")
# The driver's regimes (benchmarks/compare_mixers.py).
REGIMES = {
    "pretrained",
    "scratch",
    "probe_pretrained",
    "probe_random",
    "probe_pretrained_weighted",
    "probe_random_weighted",
}
PRETRAINED_REGIMES = {"pretrained", "probe_pretrained", "probe_pretrained_weighted"}
# The columns the issue asks runs.csv to have.
REQUIRED_COLUMNS = {
    "mixer",
    "options",
    "params",
    "seed",
    "regime",
    "labelled_minutes",
    "pretrain_steps",
    "pretrain_minutes",
    "finetune_steps",
    "finetune_minutes",
    "dev_cer",
    "test_cer",
    "test_wer",
    "peak_mib",
}


def split_utterances(root, split):
    """{utterance id: (transcript, seconds)} of a split."""
    utterances = {}
    for folder, _, names in os.walk(os.path.join(root, split)):
        for name in names:
            if name.endswith(".trans.txt"):
                with open(os.path.join(folder, name), encoding="utf-8") as stream:
                    for line in stream:
                        utterance_id, text = line.rstrip("\n").split(" ", 1)
                        info = sf.info(os.path.join(folder, f"{utterance_id}.flac"))
                        utterances[utterance_id] = (text, info.frames / info.samplerate)
    return utterances


def test_lowresource_subsets_are_disjoint_from_dev_and_test(tmp_path):
    minutes = (0.5, 1.0)
    root = generate_lowresource_corpus(
        tmp_path, 0.02, minutes, n_dev=4, n_test=4, show_progress=False
    )
    with open(os.path.join(root, MANIFEST_NAME), encoding="utf-8") as stream:
        manifest = json.load(stream)
    voices = {
        speaker_id: (speaker["accent"], speaker["variant"])
        for speaker_id, speaker in manifest["speakers"].items()
    }
    held_out = {
        split: split_utterances(root, split) for split in ("dev-clean", "test-clean")
    }
    held_out_voices = {
        voices[utterance_id.split("-")[0]]
        for utterances in held_out.values()
        for utterance_id in utterances
    }
    held_out_texts = {text for u in held_out.values() for text, _ in u.values()}
    assert held_out_voices and held_out_texts

    subsets = {}
    for target in minutes:
        name = labelled_split_name(target)
        utterances = split_utterances(root, name)
        subsets[target] = utterances
        seconds = sum(duration for _, duration in utterances.values())
        longest = max(duration for _, duration in utterances.values())
        # As long as requested, to within the last utterance added.
        assert target * 60 <= seconds < target * 60 + longest
        assert manifest["splits"][name]["utterances"] == len(utterances)
        assert abs(manifest["splits"][name]["minutes"] - seconds / 60) < 1e-3
        subset_voices = {voices[u.split("-")[0]] for u in utterances}
        assert not subset_voices & held_out_voices
        assert not {text for text, _ in utterances.values()} & held_out_texts
        for split_utterance_ids in held_out.values():
            assert not set(utterances) & set(split_utterance_ids)
    # Nested, like Libri-light's: the smaller subset is inside the larger one.
    assert set(subsets[0.5]) < set(subsets[1.0])
    unlabelled = split_utterances(root, UNLABELLED_SPLIT)
    assert unlabelled and not set(unlabelled) & set(subsets[1.0])
    assert not os.path.exists(os.path.join(root, "train-labelled-pool"))


def run_driver(*arguments):
    return subprocess.run(
        [sys.executable, DRIVER, "--quick", *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout


def test_driver_quick_runs_every_regime_resumes_and_runs_a_subset(tmp_path):
    work, results = str(tmp_path / "work"), str(tmp_path / "results")
    # An old results folder with the pre-trained PoM row: table.md sets the
    # new figures beside it.
    old = tmp_path / "old"
    old.mkdir()
    row = {
        **dict.fromkeys(REQUIRED_COLUMNS, 0),
        "study": "main",
        "variant": "fast",
        "mixer": "pom",
        "options": "degree=3 expand=2 formulation=A",
        "seed": 1,
        "regime": "pretrained",
        "labelled_minutes": "0.5",
        "params": 123,
        "test_cer": 12.34,
        "device": "cpu",
    }
    with open(old / "runs.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    arguments = ["--work", work, "--results", results, "--old-results", str(old)]
    output = run_driver(*arguments, "--run-minutes", "0.5")
    with open(os.path.join(results, "runs.csv"), newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert REQUIRED_COLUMNS <= set(rows[0])
    assert {(row["regime"], row["labelled_minutes"]) for row in rows} == {
        (regime, "0.5") for regime in REGIMES
    }
    for row in rows:
        assert row["mixer"] == "pom"
        assert row["options"] == "degree=3 expand=2 formulation=A"
        assert int(row["finetune_steps"]) == 4
        assert 0 <= float(row["test_cer"]) and float(row["finetune_minutes"]) > 0
        assert int(row["params"]) > 0 and float(row["peak_mib"]) > 0
        pretrained = row["regime"] in PRETRAINED_REGIMES
        assert int(row["pretrain_steps"]) == (4 if pretrained else 0)
    # The pre-trained regimes share one pre-training; the probes come last
    # and the weighted ones read every layer.
    assert output.count("BEST-RQ && train.py") == 1
    commands = [line for line in output.splitlines() if "CTC && " in line]
    assert ["--freeze_bestrq True" in line for line in commands] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    assert sum("--weighted_layers True" in line for line in commands) == 2
    # Without augmentation and with the small beam of small_scale.yaml.
    assert all("--augment False" in line for line in commands)
    assert all("--test_beam_size 10" in line for line in commands)

    with open(os.path.join(results, "summary.json")) as stream:
        summary = json.load(stream)
    assert {group["regime"] for group in summary["groups"]} == set(REGIMES)
    assert "pretraining_gain" in summary["targets"]
    assert "pom_probe_weighted" in summary["targets"]
    (pair,) = [
        pair for pair in summary["old_and_new"] if pair["old_test_cer"] is not None
    ]
    assert (pair["row"], pair["regime"], pair["old_test_cer"]) == (
        "pom",
        "pretrained",
        12.34,
    )
    with open(os.path.join(results, "table.md")) as stream:
        assert "| pom | pretrained | 0.5 | 123, " in stream.read()
    for plot in ("test_cer.png", "cer_vs_time.png"):
        assert os.path.getsize(os.path.join(results, plot)) > 0

    # A second invocation finds every row done and runs nothing.
    again = run_driver(*arguments, "--run-minutes", "0.5")
    assert "$ cd" not in again
    with open(os.path.join(results, "runs.csv"), newline="") as stream:
        assert list(csv.DictReader(stream)) == rows

    # A subset: PoM formulation C, from scratch only.
    subset = run_driver(
        *arguments, "--run-minutes", "0.5", "--mixers", "pom_C", "--regimes", "scratch"
    )
    assert subset.count("CTC && ") == 1 and "BEST-RQ && " not in subset
    assert "formulation: C" in subset
    with open(os.path.join(results, "runs.csv"), newline="") as stream:
        added = [row for row in csv.DictReader(stream) if row not in rows]
    assert [(row["options"], row["regime"]) for row in added] == [
        ("degree=3 expand=2 formulation=C", "scratch")
    ]


def test_driver_refuses_to_write_into_the_record_of_old_results():
    result = subprocess.run(
        [
            sys.executable,
            DRIVER,
            "--report-only",
            "--results",
            os.path.join(REPO, "benchmarks", "results", "compare-cpu"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "record of the look-alike recipes" in result.stderr


def test_sweep_variants_share_one_pretraining_and_one_scratch_run(tmp_path):
    work, results = str(tmp_path / "work"), str(tmp_path / "results")
    output = run_driver(
        "--work", work, "--results", results, "--study", "sweep",
        "--variants", "fast", "fast_freeze100", "--seeds", "1",
    )  # fmt: skip
    with open(os.path.join(results, "runs.csv"), newline="") as stream:
        rows = list(csv.DictReader(stream))
    # The sweep runs on every subset but the largest (0.5 of 0.5 and 1 min).
    assert sorted((row["variant"], row["regime"]) for row in rows) == [
        ("base", "scratch"),
        ("fast", "pretrained"),
        ("fast_freeze100", "pretrained"),
    ]
    assert {row["labelled_minutes"] for row in rows} == {"0.5"}
    assert output.count("BEST-RQ && train.py") == 1
    assert "--freeze_encoder_steps 100" in output
    # Training from scratch at its own rates, the variants at the higher ones.
    assert "--lr 0.001 --lr_bestrq 0.0008" in output
    assert "--lr 0.002 --lr_bestrq 0.002" in output
    with open(os.path.join(results, "summary.json")) as stream:
        gains = json.load(stream)["targets"]["pretraining_gain"]
    assert set(gains) == {"fast/pom", "fast_freeze100/pom"}
