"""Audio in, encoder frames out: a whole encoder, streamed chunk by chunk.

``StreamingEncoder`` joins the exact streaming front-end
(``StreamingFrontEnd``) and the streaming encoder
(``MixerTransformerASR.encode_streaming``): it takes audio in pieces of any
size, gathers the front-end's frames into chunks of the configuration's
``chunk_size`` and returns the encoder's output for each complete chunk (the
last, shorter chunk with ``final=True``). The concatenated outputs equal
``encode(frontend(audio), dynchunktrain_config=config)`` on the whole
utterance, and memory does not grow with the audio (for a package mixer).

Authors
* speechbrain-pom contributors 2026
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechbrain_pom.lobes.streaming_features import FrontEndStreamingContext


@dataclass
class StreamingEncoderContext:
    """What a stream keeps between its audio pieces.

    Example
    -------
    >>> from speechbrain_pom.lobes.streaming_features import (
    ...     FrontEndStreamingContext,
    ... )
    >>> context = StreamingEncoderContext(FrontEndStreamingContext(), None)
    >>> context.pending is None
    True
    """

    frontend: FrontEndStreamingContext
    """The front-end's audio."""

    encoder: Any
    """The encoder's context (``MixerTransformerASR.make_streaming_context``)."""

    pending: torch.Tensor | None = None
    """Front-end frames not yet encoded: fewer than a chunk."""


class StreamingEncoder(nn.Module):
    """Encodes a stream of audio chunk by chunk, as the offline model would.

    Arguments
    ---------
    frontend : speechbrain_pom.lobes.streaming_features.StreamingFrontEnd
        The front-end (features, normalisation, CNN) of the model.
    transformer : MixerTransformerASR
        The encoder (``EncoderWrapper.transformer`` in the recipes).
    dynchunktrain_config : DynChunkTrainConfig
        Chunk size (encoder frames) and left context (chunks, None for all
        the past), as in training.

    Example
    -------
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
    >>> from speechbrain_pom.lobes.models.transformer.MixerTransformerASR import (
    ...     MixerTransformerASR,
    ... )
    >>> from speechbrain_pom.lobes.streaming_features import StreamingFrontEnd
    >>> fbank = Fbank(n_mels=20)
    >>> frontend = StreamingFrontEnd(fbank, fbank.get_filter_properties())
    >>> net = MixerTransformerASR(
    ...     tgt_vocab=1, input_size=20, d_model=16, nhead=2, d_ffn=32,
    ...     num_encoder_layers=1, num_decoder_layers=0,
    ...     encoder_module="conformer", normalize_before=True, mixer="pom",
    ... ).eval()
    >>> encoder = StreamingEncoder(frontend, net, DynChunkTrainConfig(8, None))
    >>> context = encoder.make_streaming_context()
    >>> chunks = encoder(torch.rand(1, 2000), context)
    >>> [chunk.shape for chunk in chunks]
    [torch.Size([1, 8, 16])]
    >>> [chunk.shape[1] for chunk in encoder(torch.rand(1, 700), context, True)]
    [8, 1]
    """

    def __init__(self, frontend, transformer, dynchunktrain_config):
        super().__init__()
        self.frontend = frontend
        self.transformer = transformer
        self.dynchunktrain_config = dynchunktrain_config

    def make_streaming_context(self):
        """A blank context for a new stream (or a batch of streams).

        Returns
        -------
        StreamingEncoderContext
        """
        return StreamingEncoderContext(
            frontend=self.frontend.make_streaming_context(),
            encoder=self.transformer.make_streaming_context(self.dynchunktrain_config),
        )

    def forward(self, audio, context, final=False):
        """Encodes the chunks that this piece of audio completes.

        Arguments
        ---------
        audio : torch.Tensor
            (batch, samples) the next piece of the stream, of any length.
        context : StreamingEncoderContext
            Updated in place.
        final : bool
            True with the last piece: the remaining frames are encoded too.

        Returns
        -------
        list of torch.Tensor
            The encoder's output for each chunk completed, in order, each
            (batch, chunk_size, d_model); with ``final``, the last one may be
            shorter (none when the frames fill whole chunks).
        """
        frames = self.frontend(audio, context.frontend, final=final)
        if context.pending is not None:
            frames = torch.cat((context.pending, frames), dim=1)
        size = self.dynchunktrain_config.chunk_size
        complete = frames.shape[1] // size * size
        outputs = [
            self.transformer.encode_streaming(
                frames[:, start : start + size], context.encoder
            )
            for start in range(0, complete, size)
        ]
        context.pending = frames[:, complete:]
        if final and context.pending.shape[1] > 0:
            outputs.append(
                self.transformer.encode_streaming(context.pending, context.encoder)
            )
        return outputs
