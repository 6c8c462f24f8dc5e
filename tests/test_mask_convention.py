"""PoM and SummaryMixing read an attention mask as SpeechBrain's attention
does: a bool mask blocks where True; a float mask is additive, so -inf blocks
and a finite value (a bias, which a mean cannot apply) does not."""

import pytest
import torch

from speechbrain_pom.nnet.pom import PoM
from speechbrain_pom.nnet.summary_mixing import SummaryMixing

FRAMES = 6


def causal_bool_mask():
    return torch.triu(torch.ones(FRAMES, FRAMES, dtype=torch.bool), diagonal=1)


@pytest.fixture(params=["pom", "summarymixing"])
def mixer(request):
    torch.manual_seed(0)
    if request.param == "pom":
        return PoM(8, degree=2, expand=2).eval()
    return SummaryMixing(8).eval()


def mix(mixer, x, attn_mask):
    padding = torch.tensor([[False] * FRAMES, [False] * 4 + [True] * 2])
    return mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=padding)[0]


def test_float_minus_inf_blocks_as_bool_true(mixer):
    x = torch.randn(2, FRAMES, 8)
    bool_mask = causal_bool_mask()
    float_mask = torch.zeros(FRAMES, FRAMES).masked_fill(bool_mask, float("-inf"))
    torch.testing.assert_close(mix(mixer, x, float_mask), mix(mixer, x, bool_mask))
    # The mask does change the result: frame 0 sees itself only.
    assert not torch.allclose(mix(mixer, x, bool_mask), mix(mixer, x, None))


def test_finite_float_values_do_not_block(mixer):
    x = torch.randn(2, FRAMES, 8)
    bias = torch.full((FRAMES, FRAMES), -2.0).masked_fill(
        causal_bool_mask(), float("-inf")
    )
    bool_mask = causal_bool_mask()
    torch.testing.assert_close(mix(mixer, x, bias), mix(mixer, x, bool_mask))
    torch.testing.assert_close(
        mix(mixer, x, torch.full((FRAMES, FRAMES), 0.5)),
        mix(mixer, x, torch.zeros(FRAMES, FRAMES, dtype=torch.bool)),
    )
