"""Streaming greedy CTC decoding, chunk by chunk, for SpeechBrain's StreamingASR.

Greedy CTC keeps the best label of each frame, merges repeats and drops
blanks. Decoded chunk by chunk, a repeat may straddle two chunks: the label
of the previous chunk's last frame is carried over, so that the concatenated
outputs equal offline greedy decoding (``speechbrain.decoders.ctc_greedy_decode``)
of the whole utterance. The functions fit ``StreamingASR``'s hyperparameters
``make_decoder_streaming_context`` and ``decoding_function``.

Authors
* speechbrain-pom contributors 2026
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Stands for "no previous frame": no label has this index.
NO_LABEL = -1


@dataclass
class CTCGreedyStreamingContext:
    """What greedy CTC decoding carries from one chunk of a stream to the next.

    Example
    -------
    >>> context = CTCGreedyStreamingContext()
    >>> probabilities = torch.tensor([[[0.1, 0.9], [0.8, 0.2]]]).log()
    >>> ctc_greedy_decode_streaming(probabilities, context, blank_id=0)
    [[1]]
    >>> context.last_labels
    tensor([0])
    """

    last_labels: torch.Tensor | None = None
    """(batch,) best label of the last frame decoded so far; None before the
    first frame."""


def ctc_greedy_decode_streaming(probabilities, context, blank_id=-1):
    """Greedy CTC decoding of the next chunk of a batch of streams.

    Arguments
    ---------
    probabilities : torch.Tensor
        (batch, frames, labels) scores of the chunk: probabilities,
        log-probabilities or logits (only their argmax is used).
    context : CTCGreedyStreamingContext
        Updated in place; the same object for all the chunks of the streams.
    blank_id : int
        Index of the blank label; negative counts from the last label, as in
        ``speechbrain.decoders.ctc_greedy_decode``.

    Returns
    -------
    list of list of int
        For each stream, the labels this chunk adds to the transcription.

    Example
    -------
    >>> context = CTCGreedyStreamingContext()
    >>> first = torch.tensor([[[0.1, 0.9, 0.0], [0.1, 0.1, 0.8]]]).log()
    >>> second = torch.tensor([[[0.1, 0.0, 0.9], [0.9, 0.1, 0.0]]]).log()
    >>> ctc_greedy_decode_streaming(first, context, blank_id=0)
    [[1, 2]]
    >>> ctc_greedy_decode_streaming(second, context, blank_id=0)  # 2 repeats
    [[]]
    """
    if blank_id < 0:
        blank_id += probabilities.shape[-1]
    batch, frames, _ = probabilities.shape
    if frames == 0:
        return [[] for _ in range(batch)]
    # torch.max, like ctc_greedy_decode, so that ties resolve the same way.
    labels = torch.max(probabilities, dim=-1).indices
    previous = context.last_labels
    if previous is None:
        previous = labels.new_full((batch,), NO_LABEL)
    before = torch.cat([previous[:, None], labels[:, :-1]], dim=1)
    kept = (labels != before) & (labels != blank_id)
    context.last_labels = labels[:, -1]
    return [row[keep].tolist() for row, keep in zip(labels, kept)]
