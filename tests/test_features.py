"""normalize_finite: a non-finite batch never reaches the statistics of
SpeechBrain's InputNormalization."""

import logging

import torch
from speechbrain.processing.features import InputNormalization

from speechbrain_pom.processing.features import normalize_finite


def statistics(normalize):
    return normalize.glob_mean.clone(), normalize.glob_std.clone()


def test_finite_batch_updates_the_statistics():
    normalize = InputNormalization(norm_type="global")
    normalize_finite(normalize, torch.rand(2, 10, 4), torch.ones(2), ["a", "b"])
    first = statistics(normalize)
    normalize_finite(normalize, 5 + torch.rand(2, 10, 4), torch.ones(2))
    assert not torch.equal(statistics(normalize)[0], first[0])


def test_non_finite_batch_leaves_statistics_and_names_its_utterances(caplog):
    normalize = InputNormalization(norm_type="global")
    normalize_finite(normalize, torch.rand(2, 10, 4), torch.ones(2), ["a", "b"])
    before = statistics(normalize)
    feats = torch.rand(3, 10, 4)
    feats[1, 2, 0] = float("inf")
    feats[2, 0, 3] = float("nan")
    with caplog.at_level(logging.WARNING):
        normalize_finite(normalize, feats, torch.ones(3), ["ok", "inf", "nan"])
    after = statistics(normalize)
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert torch.isfinite(after[0]).all()
    assert "Non-finite features in inf, nan (" in caplog.text
    assert normalize.training
