"""Tests for speechbrain_pom.lobes.streaming_features (exact streaming front-end)."""

import pytest
import torch

from speechbrain_pom.lobes.streaming_features import StreamingFrontEnd


@pytest.mark.parametrize(
    "pieces",
    [[640 * 4] * 30, [1000, 3, 5000, 7777, 1] * 6, [20000]],
    ids=["chunks of 4 frames", "ragged pieces", "one piece"],
)
def test_streamed_frames_equal_offline_frames(tiny_frontend, pieces):
    module, properties = tiny_frontend
    streaming = StreamingFrontEnd(module, properties)
    audio = torch.randn(2, 16000 + 123)
    context = streaming.make_streaming_context()
    outputs, start = [], 0
    longest_kept = 0
    with torch.no_grad():
        offline = module(audio)
        for size in pieces:
            outputs.append(streaming(audio[:, start : start + size], context))
            longest_kept = max(longest_kept, context.samples.shape[1])
            start += size
        outputs.append(streaming(audio[:, start:], context, final=True))
    streamed = torch.cat(outputs, dim=1)
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)
    # The audio kept never grows beyond what the next frames need.
    assert longest_kept <= 2 * (streaming.reach + streaming.stride)


def test_frames_wait_for_their_lookahead(tiny_frontend):
    module, properties = tiny_frontend
    streaming = StreamingFrontEnd(module, properties)
    context = streaming.make_streaming_context()
    stride, reach = streaming.stride, streaming.reach
    with torch.no_grad():
        first = streaming(torch.randn(1, 4 * stride), context)
    # Frame j needs the samples up to stride * j + reach.
    assert first.shape[1] == (4 * stride - 1 - reach) // stride + 1 < 4
