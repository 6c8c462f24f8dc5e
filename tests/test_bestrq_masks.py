"""The BEST-RQ recipe masks as SpeechBrain's BEST-RQ recipe does: masks drawn
on filterbank frames by SpeechBrain's ``brq_mask_collate_fn``, each span one
encoder frame, noise on exactly the masked filterbank frames."""

import random

import pytest
import torch
from conftest import load_recipe_module
from speechbrain.lobes.models.BESTRQ import brq_mask_collate_fn

RECIPE = "LibriSpeech/self-supervised-learning/BEST-RQ/train.py"
HPARAMS = {
    "sample_rate": 16000,
    "hop_length": 10,
    "mask_prob": 0.15,
    "mask_length": 4,
    "n_mels": 80,
}


@pytest.fixture(scope="module")
def recipe():
    return load_recipe_module(RECIPE)


def speechbrain_output_lengths(input_lengths):
    """The get_out_len_fn of SpeechBrain's BEST-RQ train.py (sample_rate
    16000, hop_length 10): filterbank frames."""
    return (input_lengths // (16000 * 10 / 1000) + 1).to(torch.long)


def batch(lengths):
    return [
        {"id": f"utt{i}", "sig": torch.randn(length)}
        for i, length in enumerate(lengths)
    ]


def seeded(function, seed, *args, **kwargs):
    random.seed(seed)
    torch.manual_seed(seed)
    return function(*args, **kwargs)


@pytest.mark.parametrize("seed", [0, 1000])
@pytest.mark.parametrize("lengths", [[32000, 48000, 35999], [16000], [80000, 640]])
def test_masks_equal_speechbrain(recipe, seed, lengths):
    samples = batch(lengths)
    ours = seeded(recipe.make_collate_fn(HPARAMS), seed, samples)
    theirs = seeded(
        brq_mask_collate_fn,
        seed,
        samples,
        get_out_len_fn=speechbrain_output_lengths,
        mask_prob=0.15,
        mask_length=4,
        n_mels=80,
    )
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine, reference)
    # The masks lie within the shortest utterance's filterbank frames.
    assert ours[2].max() < min(length // 160 + 1 for length in lengths)


def test_recipe_lengths_are_filterbank_frames(recipe):
    samples = torch.tensor([0, 159, 160, 16000, 35999])
    assert torch.equal(
        recipe.fbank_frames(samples), speechbrain_output_lengths(samples)
    )
    fbank = load_fbank()
    for length in (16000, 35999):
        assert fbank(torch.zeros(1, length)).shape[1] == recipe.fbank_frames(
            torch.tensor(length)
        )


def load_fbank():
    from speechbrain.lobes.features import Fbank

    return Fbank(sample_rate=16000, n_fft=400, n_mels=80)


@pytest.mark.parametrize("seed", range(5))
def test_each_span_is_one_encoder_frame(recipe, seed):
    _, _, mask = seeded(recipe.make_collate_fn(HPARAMS), seed, batch([48000, 40000]))
    mask_idx = recipe.encoder_frames(mask)
    assert len(mask) == 4 * len(mask_idx)
    # Spans start at multiples of 4 and cover the 4 filterbank frames of
    # encoder frame mask_idx.
    assert torch.equal(mask, (4 * mask_idx[:, None] + torch.arange(4)).flatten())
    assert len(set(mask_idx.tolist())) == len(mask_idx)


def test_noise_replaces_exactly_the_masked_frames(recipe):
    torch.manual_seed(0)
    feats = recipe.pad_feats(torch.randn(3, 201, 80), 4)
    assert feats.shape[1] == 204
    mask = torch.tensor([8, 9, 10, 11, 40, 41, 42, 43])
    original = feats.clone()
    masked, mask_idx = recipe.mask_features(feats, mask, 0.0, 0.1)
    assert torch.equal(feats, original)  # the input is left alone
    assert torch.equal(mask_idx, torch.tensor([2, 10]))
    changed = (masked != feats).any(dim=-1)  # (batch, frames)
    expected = torch.zeros(204, dtype=torch.bool)
    expected[mask] = True
    assert torch.equal(changed, expected.expand(3, -1))
    noise = masked[:, mask]
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 0.1) < 0.01
    shifted, _ = recipe.mask_features(feats, mask, 5.0, 0.1)
    assert abs(shifted[:, mask].mean().item() - 5.0) < 0.02


def test_too_short_batch_has_a_clear_error(recipe):
    with pytest.raises(ValueError, match=r"utterance\(s\) \['utt1'\] have fewer"):
        recipe.make_collate_fn(HPARAMS)(batch([16000, 400]))
