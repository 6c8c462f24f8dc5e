"""Feature front-ends for streaming: exact chunk by chunk, and SpeechBrain's
``StreamingFeatureWrapper`` made to keep whole chunks.

The encoder streams exactly (``MixerTransformerASR.encode_streaming``), but
its input frames come from a front-end that, in training, sees the whole
utterance: output frame ``j`` of the recipes' front-end (Fbank, 10 ms hop,
then two stride-2 convolutions: a 40 ms stride) is computed from the samples
``stride * j - reach .. stride * j + reach`` (``reach`` = 1160 samples, 72.5
ms at 16 kHz), so it looks ahead into the next chunk. SpeechBrain's
``StreamingFeatureWrapper`` only approximates this: ``StreamingASR`` feeds it
``(stride - 1) * chunk_size`` samples per chunk of ``chunk_size`` frames, so
its frame grid drifts by ``chunk_size`` samples per chunk, and its frames
differ from the offline ones on this front-end.

``StreamingFrontEnd`` is exact instead: it keeps the audio that the frames
still to come need (``reach`` samples plus less than one stride, aligned on
the stride so that the filterbank and convolution grids stay those of the
whole utterance), runs the front-end on it with each new piece of audio and
returns only the frames whose samples have all arrived. Each frame is thus
emitted ``reach`` samples late, and memory does not grow with the audio. The
concatenated outputs equal the front-end applied to the whole utterance. The
front-end must be time-invariant once trained: a global (or no)
normalisation, not a per-sentence one.

``WholeChunkFeatureWrapper`` is what the inference folder's
``streaming_hyperparams.yaml`` names, so that SpeechBrain's ``StreamingASR``
can drive this package's encoder.

Authors
* speechbrain-pom contributors 2026
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from speechbrain.lobes.features import (
    StreamingFeatureWrapper,
    StreamingFeatureWrapperContext,
)
from torch import nn


@dataclass
class FrontEndStreamingContext:
    """What the front-end keeps between the audio pieces of a stream.

    Example
    -------
    >>> context = FrontEndStreamingContext()
    >>> context.samples is None, context.frames_emitted
    (True, 0)
    """

    samples: torch.Tensor | None = None
    """(batch, samples) the audio still needed, from sample ``first_sample``."""

    first_sample: int = 0
    """Index in the stream of ``samples[:, 0]``, a multiple of the stride."""

    frames_emitted: int = 0
    """Frames returned so far."""


class StreamingFrontEnd(nn.Module):
    """Runs a front-end on a stream of audio, with the offline result.

    Arguments
    ---------
    module : torch.nn.Module
        The front-end, ``module(audio)`` -> (batch, frames, ...), e.g.
        ``LengthsCapableSequential(compute_features, normalize, CNN)``, in
        eval mode.
    properties : speechbrain.utils.filter_analysis.FilterProperties
        Its stride and window in samples, e.g.
        ``stack_filter_properties([compute_features, CNN])``.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> fbank = Fbank(n_mels=40)
    >>> frontend = StreamingFrontEnd(fbank, fbank.get_filter_properties())
    >>> context = frontend.make_streaming_context()
    >>> audio = torch.rand(1, 8000)
    >>> pieces = [frontend(audio[:, :5000], context)]
    >>> pieces.append(frontend(audio[:, 5000:], context, final=True))
    >>> [piece.shape[1] for piece in pieces]
    [31, 20]
    >>> streamed = torch.cat(pieces, dim=1)
    >>> torch.allclose(streamed, fbank(audio), atol=1e-4)
    True
    """

    def __init__(self, module, properties):
        super().__init__()
        if properties.causal or properties.dilation != 1:
            raise ValueError(
                f"Expected a centred, undilated front-end; got {properties}"
            )
        self.module = module
        self.stride = properties.stride
        self.reach = (properties.window_size - 1) // 2

    def make_streaming_context(self):
        """A blank context for a new stream (or a batch of streams).

        Returns
        -------
        FrontEndStreamingContext
        """
        return FrontEndStreamingContext()

    def forward(self, audio, context, final=False):
        """The frames that the audio received so far completes.

        Arguments
        ---------
        audio : torch.Tensor
            (batch, samples) the next piece of the stream, of any length.
        context : FrontEndStreamingContext
            Updated in place.
        final : bool
            True with the last piece: every remaining frame is returned, as
            the offline front-end computes it at the end of the utterance.

        Returns
        -------
        torch.Tensor
            (batch, frames, ...) frames ``context.frames_emitted`` onwards (as
            numbered offline); possibly none.
        """
        if context.samples is not None:
            audio = torch.cat((context.samples, audio), dim=1)
        received = context.first_sample + audio.shape[1]
        first_frame = context.first_sample // self.stride
        frames = self.module(audio)
        if final:
            stop = first_frame + frames.shape[1]
        else:
            # Frame j needs the samples up to stride * j + reach.
            stop = max(0, (received - 1 - self.reach) // self.stride + 1)
        start = context.frames_emitted
        ready = frames[:, start - first_frame : stop - first_frame]
        context.frames_emitted = max(start, stop)
        # Keep from the first sample the next frame needs, on the stride grid
        # so that the filterbank and convolution grids do not move.
        needed = max(0, context.frames_emitted * self.stride - self.reach)
        keep_from = needed // self.stride * self.stride
        context.samples = audio[:, keep_from - context.first_sample :]
        context.first_sample = keep_from
        return ready


@dataclass
class WholeChunkFeatureContext(StreamingFeatureWrapperContext):
    """``StreamingFeatureWrapperContext`` that also keeps the chunk length.

    Example
    -------
    >>> context = WholeChunkFeatureContext(left_context=None)
    >>> context.chunk_samples is None
    True
    """

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
