"""SummaryMixing: a linear-time token mixer for speech encoders.

SummaryMixing replaces self-attention with a per-utterance summary: every
frame is transformed locally, the utterance is summarised by the mean of a
second per-frame transformation, and a combiner merges the two for each frame.
Without an attention mask the cost is linear in the number of frames.

Reference: Parcollet et al., "SummaryMixing: A Linear-Complexity Alternative
to Self-Attention for Speech Recognition and Understanding",
https://arxiv.org/abs/2307.07421

Authors
 * speechbrain-pom contributors
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from speechbrain_pom.utils.dynamic_chunk_mean import (
    StreamingMean,
    chunk_window_mean,
    frames_allowed,
    weighted_group_sums,
)

MODES = ("SummaryMixing", "SummaryMixing-lite")


class SummaryMixing(nn.Module):
    """Token mixer that combines each frame with a mean summary of the utterance.

    For an input sequence x_1, ..., x_T this computes (Parcollet et al., 2023)

        s_bar = 1/T * sum_t s(x_t)
        y_t = c([f(x_t), s_bar])

    where the local transformation f, the summary function s and the combiner
    c are dense layers followed by an activation, and [., .] is concatenation.
    In the ``"SummaryMixing-lite"`` mode the local branch is dropped and
    y_t = c(s_bar).

    The combiner is a single ``nn.Linear`` over the concatenation, but it is
    evaluated as W_f f(x_t) + W_s s_bar + b, with W = [W_f, W_s]: the summary
    term is computed once per utterance instead of once per frame, which
    avoids materialising a (B, T, local_hidden + summary_hidden) tensor.

    Cost: O(T) time and memory with no ``attn_mask`` (with or without
    ``key_padding_mask``) and with a ``DynChunkTrainConfig`` as ``attn_mask``
    (chunked or causal training: one summary per chunk, over the chunk and its
    left context, see ``dynamic_chunk_mean``). With a tensor ``attn_mask`` (any mask)
    every frame gets its own summary over the frames it may see, computed
    with a (B, T, T) matrix product: O(T^2) time and memory.
    ``forward_streaming`` processes one chunk at a time in constant memory.

    Arguments
    ---------
    d_model : int
        Number of input and output features.
    local_hidden : int, optional
        Output width of the local transformation f. Defaults to ``d_model``.
    summary_hidden : int, optional
        Output width of the summary function s. Defaults to ``d_model``.
    mode : str
        ``"SummaryMixing"`` (local and summary branches) or
        ``"SummaryMixing-lite"`` (summary branch only).
    dropout : float
        Dropout probability applied to the output.
    activation : type
        Activation class used after f, s and c. Defaults to ``nn.GELU``.

    Example
    -------
    >>> x = torch.rand(2, 50, 144)
    >>> mixer = SummaryMixing(144)
    >>> out, attn = mixer(x, x, x)
    >>> out.shape
    torch.Size([2, 50, 144])
    >>> attn is None
    True
    >>> padding = torch.arange(50)[None, :] >= torch.tensor([[50], [30]])
    >>> out, _ = mixer(x, x, x, key_padding_mask=padding)
    >>> out.shape
    torch.Size([2, 50, 144])
    >>> lite = SummaryMixing(144, mode="SummaryMixing-lite")
    >>> lite(x, x, x)[0].shape
    torch.Size([2, 50, 144])
    >>> chunks = DynChunkTrainConfig(chunk_size=8, left_context_size=None)
    >>> mixer(x, x, x, attn_mask=chunks, key_padding_mask=padding)[0].shape
    torch.Size([2, 50, 144])
    """

    def __init__(
        self,
        d_model: int,
        local_hidden: int | None = None,
        summary_hidden: int | None = None,
        mode: str = "SummaryMixing",
        dropout: float = 0.0,
        activation: type = nn.GELU,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.local_hidden = d_model if local_hidden is None else local_hidden
        self.summary_hidden = (
            d_model if summary_hidden is None else summary_hidden
        )

        self.summary_transform = nn.Linear(d_model, self.summary_hidden)
        if mode == "SummaryMixing":
            self.local_transform = nn.Linear(d_model, self.local_hidden)
            combiner_inputs = self.local_hidden + self.summary_hidden
        else:
            combiner_inputs = self.summary_hidden
        self.combiner = nn.Linear(combiner_inputs, d_model)
        self.activation = activation()
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | DynChunkTrainConfig | None = None,
        key_padding_mask: torch.Tensor | None = None,
        pos_embs: torch.Tensor | None = None,
        return_attn_weights: bool = True,
    ):
        """Mixes the frames of ``query``.

        The signature matches SpeechBrain's attention modules so that this
        class can replace self-attention, e.g. in ``ConformerEncoderLayer``.
        Only ``query`` is used: ``key`` and ``value`` are ignored (this is a
        self-mixing layer), as are ``pos_embs`` and ``return_attn_weights``.

        Arguments
        ---------
        query : torch.Tensor
            (B, T, d_model) input sequence.
        key : torch.Tensor
            Ignored.
        value : torch.Tensor
            Ignored.
        attn_mask : torch.Tensor or DynChunkTrainConfig, optional
            A ``DynChunkTrainConfig`` (``dynamic_chunk_mean.CAUSAL`` for a causal
            mask): each frame summarises its chunk and the config's left
            context; O(T). A (T, T) or (B, T, T) tensor saying which frames
            each query frame may summarise: either bool, True = not allowed
            (as built by ``make_transformer_src_mask``), or float additive,
            0 = allowed and -inf = not allowed (as built by
            ``get_lookahead_mask``); costs O(T^2). Frame t then uses the mean
            over its allowed, non-padded frames.
        key_padding_mask : torch.Tensor, optional
            (B, T) bool, True = padding. Padded frames are excluded from the
            summary.
        pos_embs : torch.Tensor, optional
            Ignored.
        return_attn_weights : bool
            Ignored; there are no attention weights.

        Returns
        -------
        output : torch.Tensor
            (B, T, d_model) mixed sequence.
        attn_weights : None
            Always None.
        """
        summary = self.activation(self.summary_transform(query))
        if key_padding_mask is not None:
            # masked_fill rather than a multiply, so that non-finite padding
            # content cannot leak into the summary (0 * nan = nan).
            summary = summary.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        summary_mean, frames_per_mean = self._summary_mean(
            summary, attn_mask, key_padding_mask
        )
        return self._combine(query, summary_mean, frames_per_mean), None

    def _combine(self, query, summary_mean, frames_per_mean):
        """y_t = c([f(x_t), s_bar]), each frame with its summary mean.

        Arguments
        ---------
        query : torch.Tensor
            (B, T, d_model) input frames.
        summary_mean : torch.Tensor
            (B, groups, summary_hidden): one mean per group of frames.
        frames_per_mean : int
            Consecutive frames that share a mean (the last may serve fewer).

        Returns
        -------
        torch.Tensor
            (B, T, d_model).
        """
        frames = query.shape[1]
        if self.mode == "SummaryMixing":
            local = self.activation(self.local_transform(query))
            local_weight = self.combiner.weight[:, : self.local_hidden]
            summary_weight = self.combiner.weight[:, self.local_hidden :]
            # Same result as the combiner over concat([local, summary_mean]),
            # without broadcasting the summary to every frame first.
            local_part = F.linear(local, local_weight, self.combiner.bias)
            summary_part = F.linear(summary_mean, summary_weight)
        else:
            local_part = 0.0
            summary_part = self.combiner(summary_mean)
        if summary_part.shape[1] == 1:
            summary_part = summary_part.expand(-1, frames, -1)
        else:
            summary_part = summary_part.repeat_interleave(
                frames_per_mean, dim=1
            )
        combined = local_part + summary_part[:, :frames]
        return self.dropout(self.activation(combined))

    def make_streaming_context(self, left_chunks):
        """A blank streaming state for one stream (or a batch of streams).

        Arguments
        ---------
        left_chunks : int or None
            Chunks of left context, as ``DynChunkTrainConfig.left_context_size``.

        Returns
        -------
        StreamingMean
        """
        return StreamingMean(left_chunks)

    def forward_streaming(self, x, context):
        """Mixes the next chunk of a stream, as the chunked training would.

        Arguments
        ---------
        x : torch.Tensor
            (B, frames, d_model): the next chunk (``chunk_size`` frames, fewer
            only for the last chunk), no padding.
        context : StreamingMean
            From ``make_streaming_context``; updated in place.

        Returns
        -------
        torch.Tensor
            (B, frames, d_model).

        Example
        -------
        >>> mixer = SummaryMixing(16).eval()
        >>> context = mixer.make_streaming_context(left_chunks=2)
        >>> mixer.forward_streaming(torch.rand(2, 4, 16), context).shape
        torch.Size([2, 4, 16])
        """
        summary = self.activation(self.summary_transform(x))
        with torch.autocast(device_type=x.device.type, enabled=False):
            chunk_sum = summary.to(
                torch.promote_types(summary.dtype, torch.float32)
            )
            chunk_sum = chunk_sum.sum(dim=1)
        summary_mean = context.update(chunk_sum, x.shape[1]).to(summary.dtype)
        return self._combine(x, summary_mean[:, None], x.shape[1])

    def _summary_mean(
        self,
        summary: torch.Tensor,
        attn_mask: torch.Tensor | DynChunkTrainConfig | None,
        key_padding_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, int]:
        """Averages ``summary`` over the frames each query frame may see.

        Arguments
        ---------
        summary : torch.Tensor
            (B, T, summary_hidden) per-frame summaries, zero on padded frames.
        attn_mask : torch.Tensor or DynChunkTrainConfig, optional
            See ``forward``.
        key_padding_mask : torch.Tensor, optional
            See ``forward``.

        Returns
        -------
        mean : torch.Tensor
            (B, 1, summary_hidden) without ``attn_mask``, (B, chunks,
            summary_hidden) with a ``DynChunkTrainConfig``, (B, T,
            summary_hidden) with a tensor mask; same dtype as ``summary``.
        frames_per_mean : int
            Consecutive frames that share a mean (the last may serve fewer).
        """
        batch, frames, _ = summary.shape
        # Sums over thousands of frames lose precision in half precision, so
        # accumulate in (at least) float32 with autocast off.
        accumulate_dtype = torch.promote_types(summary.dtype, torch.float32)
        with torch.autocast(device_type=summary.device.type, enabled=False):
            summary_acc = summary.to(accumulate_dtype)
            if isinstance(attn_mask, DynChunkTrainConfig):
                if key_padding_mask is None:
                    real = summary_acc.new_ones(batch, frames)
                else:
                    real = (~key_padding_mask).to(accumulate_dtype)
                size = attn_mask.chunk_size
                sums = weighted_group_sums(real, summary_acc, size)
                mean, frames_per_mean = (
                    chunk_window_mean(sums, real, attn_mask),
                    size,
                )
            elif attn_mask is None:
                frames_per_mean = frames
                if key_padding_mask is None:
                    mean = summary_acc.mean(dim=1, keepdim=True)
                else:
                    real_frames = (
                        (~key_padding_mask).sum(dim=1).view(batch, 1, 1)
                    )
                    # Padded frames are already zero, so the plain sum is the
                    # sum over real frames.
                    total = summary_acc.sum(dim=1, keepdim=True)
                    mean = total / real_frames.clamp(min=1)
            else:
                frames_per_mean = 1
                allowed = frames_allowed(attn_mask).expand(
                    batch, frames, frames
                )
                if key_padding_mask is not None:
                    allowed = allowed & ~key_padding_mask.unsqueeze(1)
                weights = allowed.to(accumulate_dtype)
                # A frame that may see nothing gets a zero summary, not a nan.
                weights = weights / weights.sum(dim=-1, keepdim=True).clamp(
                    min=1
                )
                mean = torch.bmm(weights, summary_acc)
        return mean.to(summary.dtype), frames_per_mean
