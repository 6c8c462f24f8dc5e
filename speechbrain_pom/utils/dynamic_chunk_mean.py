"""Means over the frames that Dynamic Chunk Training lets each frame see.

With SpeechBrain's ``DynChunkTrainConfig(chunk_size=c, left_context_size=L)``
the frames are cut into chunks of ``c`` (the grid starts at frame 0; the last
chunk may be shorter), and frame ``t`` of chunk ``k = t // c`` may see the
frames of chunks ``max(0, k - L) .. k`` (chunks ``0 .. k`` when ``L`` is
None). A causal mask is the special case ``c = 1``, ``L = None``. So every
frame of a chunk shares one mean, the sum of the window's chunk sums over the
sum of its frame counts; mean-based mixers (PoM, SummaryMixing) need only
per-chunk sums, never a frames x frames mask:

* in training, ``weighted_group_sums`` then ``chunk_window_mean``: O(frames)
  time and memory;
* in streaming, ``StreamingMean`` keeps the last ``L`` chunk sums (or one
  running sum when ``L`` is None): constant memory per stream.

Authors
* speechbrain-pom contributors 2026
"""

from collections import deque

import torch
import torch.nn.functional as F

from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

# A causal mask lets frame t see frames 0..t: chunks of one frame, whole past.
CAUSAL = DynChunkTrainConfig(chunk_size=1, left_context_size=None)

# Unlimited left context sums up to hours of chunks: accumulate them in float64
# so that the mean does not drift.
RUNNING_SUM_DTYPE = torch.float64


def frames_allowed(attn_mask):
    """Which frames each query frame may see under an attention mask, by
    SpeechBrain's convention, shared by the mean-based mixers.

    A bool mask blocks where True (``make_transformer_src_mask``); a float
    mask is added to attention scores (``get_lookahead_mask``), so only -inf
    blocks: a finite value is a bias, which a mean cannot apply.

    Arguments
    ---------
    attn_mask : torch.Tensor
        (T, T) or (B, T, T), bool or float.

    Returns
    -------
    torch.Tensor
        Bool, of the same shape: True where the query frame may see the frame.

    Example
    -------
    >>> frames_allowed(torch.tensor([[False, True]]))
    tensor([[ True, False]])
    >>> frames_allowed(torch.tensor([[0.0, float("-inf"), 0.5]]))
    tensor([[ True, False,  True]])
    """
    if attn_mask.dtype == torch.bool:
        return ~attn_mask
    return ~torch.isneginf(attn_mask)


def weighted_group_sums(weights, values, group):
    """Weighted sums of ``values`` over consecutive groups of ``group`` frames.

    Arguments
    ---------
    weights : torch.Tensor
        (batch, frames) weight of each frame (e.g. 1 for a real frame, 0 for
        padding).
    values : torch.Tensor
        (batch, frames, features).
    group : int
        Frames per group; the last group may be shorter.

    Returns
    -------
    torch.Tensor
        (batch, ceil(frames / group), features): ``sum_t weights_t values_t``
        over each group, in the precision of ``values`` (autocast off).

    Example
    -------
    >>> values = torch.arange(10.0).view(1, 5, 2)
    >>> weighted_group_sums(torch.ones(1, 5), values, group=2)
    tensor([[[ 2.,  4.],
             [10., 12.],
             [ 8.,  9.]]])
    """
    frames = values.shape[1]
    with torch.autocast(device_type=values.device.type, enabled=False):
        weights = weights.to(values.dtype)
        if frames <= group:
            return torch.bmm(weights[:, None, :], values)
        if group == 1:  # a product, not one tiny matrix product per frame
            return values * weights[..., None]
        # A matrix product per group: no (frames, features) product tensor.
        missing = -frames % group
        weights = F.pad(weights, (0, missing)).unflatten(1, (-1, group))
        values = F.pad(values, (0, 0, 0, missing)).unflatten(1, (-1, group))
        return torch.matmul(weights[:, :, None, :], values).squeeze(2)


def window_mean(sums, counts, left_chunks):
    """Mean over each chunk's window: its own sum and the ``left_chunks`` before.

    Arguments
    ---------
    sums : torch.Tensor
        (batch, chunks, features) sum of the (real) frames of each chunk.
    counts : torch.Tensor
        (batch, chunks) number of real frames of each chunk.
    left_chunks : int or None
        Chunks of left context; None for all the past.

    Returns
    -------
    torch.Tensor
        (batch, chunks, features), dtype of ``sums``; a window without real
        frames gets 0.

    Example
    -------
    >>> sums = torch.tensor([[[2.0], [4.0], [9.0]]])
    >>> counts = torch.tensor([[2.0, 2.0, 1.0]])
    >>> window_mean(sums, counts, left_chunks=None)[0, :, 0]
    tensor([1.0000, 1.5000, 3.0000])
    >>> window_mean(sums, counts, left_chunks=1)[0, :, 0]
    tensor([1.0000, 1.5000, 4.3333])
    """
    if left_chunks is None:
        # Prefix sums only add, so there is no cancellation; float64 matches
        # the streaming running sum.
        totals = sums.to(RUNNING_SUM_DTYPE).cumsum(1)
        frames = counts.to(RUNNING_SUM_DTYPE).cumsum(1)
    else:
        # Each window summed anew (an unfold is a view), rather than a
        # difference of prefix sums, which would cancel catastrophically.
        size = left_chunks + 1
        totals = F.pad(sums, (0, 0, left_chunks, 0)).unfold(1, size, 1).sum(-1)
        frames = F.pad(counts, (left_chunks, 0)).unfold(1, size, 1).sum(-1)
    return (totals / frames.clamp(min=1)[..., None]).to(sums.dtype)


def chunk_window_mean(sums, real, config):
    """The mean each chunk of ``config`` uses, from the chunks' sums.

    Arguments
    ---------
    sums : torch.Tensor
        (batch, ceil(frames / chunk_size), features): sums over the real
        frames of each chunk (e.g. from ``weighted_group_sums``).
    real : torch.Tensor
        (batch, frames) 1 on real frames, 0 on padding.
    config : DynChunkTrainConfig
        Chunk size and left context (in chunks, None for all the past).

    Returns
    -------
    torch.Tensor
        (batch, ceil(frames / chunk_size), features): the mean over the real
        frames that each frame of the chunk may see.

    Example
    -------
    >>> values, real = torch.rand(2, 10, 3), torch.ones(2, 10)
    >>> sums = weighted_group_sums(real, values, group=4)
    >>> chunk_window_mean(sums, real, DynChunkTrainConfig(4, 1)).shape
    torch.Size([2, 3, 3])
    """
    ones = real.new_ones(*real.shape, 1)
    counts = weighted_group_sums(real, ones, config.chunk_size)[..., 0]
    return window_mean(sums, counts, config.left_context_size)


class StreamingMean:
    """The streaming counterpart of ``window_mean``: one stream, chunk by chunk.

    Holds what the window needs from the past, whatever the length of the
    audio: the sums and frame counts of the last ``left_chunks`` chunks, or,
    with unlimited left context, one running sum (float64) and one count.

    Arguments
    ---------
    left_chunks : int or None
        Chunks of left context, as ``DynChunkTrainConfig.left_context_size``.

    Example
    -------
    >>> stream = StreamingMean(left_chunks=1)
    >>> stream.update(torch.tensor([[2.0]]), frames=2)
    tensor([[1.]])
    >>> stream.update(torch.tensor([[4.0]]), frames=2)
    tensor([[1.5000]])
    >>> stream.update(torch.tensor([[9.0]]), frames=1)
    tensor([[4.3333]])
    """

    def __init__(self, left_chunks):
        self.left_chunks = left_chunks
        self.past = None if left_chunks is None else deque(maxlen=left_chunks)
        self.running_sum = None
        self.running_frames = 0

    def update(self, chunk_sum, frames):
        """Adds the next chunk and returns the mean its frames use.

        Arguments
        ---------
        chunk_sum : torch.Tensor
            (batch, features) sum over the frames of the chunk.
        frames : int
            Number of frames in the chunk.

        Returns
        -------
        torch.Tensor
            (batch, features) mean over the chunk and its left context, dtype
            of ``chunk_sum``.
        """
        if self.past is None:
            wide = chunk_sum.to(RUNNING_SUM_DTYPE)
            self.running_sum = (
                wide if self.running_sum is None else self.running_sum + wide
            )
            self.running_frames += frames
            total, count = self.running_sum, self.running_frames
        else:
            total = torch.stack([*(s for s, _ in self.past), chunk_sum]).sum(0)
            count = frames + sum(n for _, n in self.past)
            self.past.append((chunk_sum, frames))
        return (total / count).to(chunk_sum.dtype)
