"""Pieces that the inference folder's ``streaming_hyperparams.yaml`` names, so
that SpeechBrain's ``StreamingASR`` can drive this package's encoder.

Authors
* speechbrain-pom contributors 2026
"""

from dataclasses import dataclass

import torch.nn.functional as F
from speechbrain.lobes.features import (
    StreamingFeatureWrapper,
    StreamingFeatureWrapperContext,
)


@dataclass
class WholeChunkFeatureContext(StreamingFeatureWrapperContext):
    """``StreamingFeatureWrapperContext`` that also keeps the chunk length."""

    chunk_samples: int | None = None
    """Samples of the stream's first chunk, the length of every chunk."""


class WholeChunkFeatureWrapper(StreamingFeatureWrapper):
    """SpeechBrain's ``StreamingFeatureWrapper``, with a short chunk padded
    with zeros to the length of the stream's first chunk.

    ``StreamingASR.transcribe_file`` cuts the audio into chunks, the last one
    shorter, then appends whole chunks of zeros. This package's encoder takes
    ``chunk_size`` frames per call, only the very last call fewer, so that its
    chunks stay those of training; padding the short chunk with the zeros
    that follow anyway keeps every chunk whole. A stream shorter than one
    chunk is still refused by the encoder.

    Arguments
    ---------
    module : torch.nn.Module
        The front-end, as for ``StreamingFeatureWrapper``.
    properties : speechbrain.utils.filter_analysis.FilterProperties
        Its stride and window, as for ``StreamingFeatureWrapper``.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.features import Fbank
    >>> fbank = Fbank(n_mels=20)
    >>> wrapper = WholeChunkFeatureWrapper(fbank, fbank.get_filter_properties())
    >>> context = wrapper.make_streaming_context()
    >>> wrapper(torch.rand(1, 1600), context).shape
    torch.Size([1, 11, 20])
    >>> wrapper(torch.rand(1, 900), context).shape
    torch.Size([1, 11, 20])
    """

    def forward(self, chunk, context, *extra_args, **extra_kwargs):
        """The features of the next chunk, padded to the first chunk's length.

        Arguments
        ---------
        chunk : torch.Tensor
            (batch, samples) the next chunk of audio.
        context : WholeChunkFeatureContext
            Updated in place.
        *extra_args, **extra_kwargs
            Passed to the wrapped front-end.

        Returns
        -------
        torch.Tensor
            The features, as ``StreamingFeatureWrapper`` gives them.
        """
        if context.chunk_samples is None:
            context.chunk_samples = chunk.shape[-1]
        missing = context.chunk_samples - chunk.shape[-1]
        if missing > 0:
            chunk = F.pad(chunk, (0, missing))
        return super().forward(chunk, context, *extra_args, **extra_kwargs)

    def make_streaming_context(self):
        """A blank context for a new stream.

        Returns
        -------
        WholeChunkFeatureContext
        """
        return WholeChunkFeatureContext(left_context=None)
