"""Tests for speechbrain_pom.decoders.ctc (streaming greedy CTC decoding)."""

import pytest
import torch
from speechbrain.decoders import ctc_greedy_decode

from speechbrain_pom.decoders.ctc import (
    CTCGreedyStreamingContext,
    ctc_greedy_decode_streaming,
)


def one_hot_log_probs(labels, vocabulary=4):
    """(1, frames, vocabulary) log-probabilities whose argmax is ``labels``."""
    probs = torch.full((1, len(labels), vocabulary), 0.1)
    probs[0, torch.arange(len(labels)), torch.tensor(labels)] = 0.7
    return probs.log()


def decode_in_chunks(log_probs, boundaries, blank_id):
    """Streams ``log_probs`` cut at ``boundaries``; concatenates the outputs."""
    context = CTCGreedyStreamingContext()
    edges = [0, *boundaries, log_probs.shape[1]]
    decoded = [[] for _ in range(log_probs.shape[0])]
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        chunk = ctc_greedy_decode_streaming(
            log_probs[:, start:stop], context, blank_id=blank_id
        )
        for stream, labels in zip(decoded, chunk, strict=True):
            stream.extend(labels)
    return decoded


@pytest.mark.parametrize(
    "labels, boundaries, expected",
    [
        ([1, 1, 1, 2], [2], [1, 2]),  # a repeat across the boundary
        ([1, 0, 1, 2], [2], [1, 1, 2]),  # a blank before the boundary
        ([1, 1, 0, 1], [1, 2, 3], [1, 1]),  # one-frame chunks
        ([0, 0, 3, 3], [2], [3]),  # the first chunk is all blank
        ([2, 2, 2, 2], [1, 1, 3], [2]),  # an empty chunk changes nothing
    ],
)
def test_boundary_cases(labels, boundaries, expected):
    log_probs = one_hot_log_probs(labels)
    assert decode_in_chunks(log_probs, boundaries, blank_id=0) == [expected]
    assert ctc_greedy_decode(log_probs, torch.ones(1), blank_id=0) == [expected]


@pytest.mark.parametrize("blank_id", [0, -1])
@pytest.mark.parametrize("seed", range(5))
def test_streaming_equals_offline_greedy_decoding(blank_id, seed):
    generator = torch.Generator().manual_seed(seed)
    batch, frames, vocabulary = 3, 60, 5
    # Slowly varying scores: long runs of one label, so repeats and blanks
    # fall on chunk boundaries.
    scores = torch.randn(batch, frames // 4, vocabulary, generator=generator)
    log_probs = scores.repeat_interleave(4, dim=1).log_softmax(-1)
    log_probs = log_probs + 0.3 * torch.randn(log_probs.shape, generator=generator)
    cuts = torch.randint(0, frames + 1, (6,), generator=generator)
    boundaries = sorted(cuts.tolist())
    offline = ctc_greedy_decode(log_probs, torch.ones(batch), blank_id=blank_id)
    streamed = decode_in_chunks(log_probs, boundaries, blank_id)
    assert streamed == offline
    assert sum(len(labels) for labels in offline) > batch  # not trivially empty
