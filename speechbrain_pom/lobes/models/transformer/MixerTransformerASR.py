"""SpeechBrain's TransformerASR / Conformer encoder with the token mixer chosen by name.

SpeechBrain's ``ConformerEncoderLayer`` calls its token mixer as
``self.mha_layer(x, x, x, attn_mask=..., key_padding_mask=..., pos_embs=...)``
and unpacks ``(output, attention)``. Any module with that signature can take
the place of ``mha_layer``, so the encoder is built by SpeechBrain itself and
the mixers that SpeechBrain does not know (PoM, SummaryMixing) are put in each
layer afterwards. SpeechBrain's source is not modified.

Streaming (Dynamic Chunk Training, then chunk-by-chunk inference) follows
SpeechBrain's interface: ``encode(src, wav_len, dynchunktrain_config=...)``
in training, ``make_streaming_context(config)`` and
``encode_streaming(chunk, context)`` at inference (also reached through
SpeechBrain's ``EncoderWrapper`` and ``StreamingASR``). For this package's
mixers the model carries, per layer, the chunk sums that the mean needs and
the convolution's left frames, so memory per stream stays constant.

Authors
* speechbrain-pom contributors 2026
"""

import inspect
from dataclasses import dataclass

import torch
from speechbrain.lobes.models.transformer.TransformerASR import (
    TransformerASR,
    TransformerASRStreamingContext,
    make_transformer_src_tgt_masks,
)
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from speechbrain_pom.nnet.pom import PoM
from speechbrain_pom.nnet.summary_mixing import SummaryMixing
from speechbrain_pom.utils.dynamic_chunk_mean import CAUSAL, StreamingMean

# Mixers that SpeechBrain builds itself, by its own ``attention_type``.
SPEECHBRAIN_MIXERS = ("RelPosMHAXL", "RoPEMHA", "hypermixing")
# Mixers of this package: module class, built with (d_model, **options).
PACKAGE_MIXERS = {"pom": PoM, "summarymixing": SummaryMixing}
MIXERS = tuple(PACKAGE_MIXERS) + SPEECHBRAIN_MIXERS
# SpeechBrain attention type that hosts a package mixer: it adds no positional
# encoding and passes no positional embeddings, which a mean-based mixer
# ignores anyway (order comes from the convolution module).
HOST_ATTENTION_TYPE = "RoPEMHA"


def build_mixer(name, d_model, options=None):
    """Builds one of this package's mixers, with a clear error on bad options.

    Arguments
    ---------
    name : str
        "pom" or "summarymixing".
    d_model : int
        Model dimension.
    options : dict, optional
        Keyword arguments of the mixer class (e.g. degree, expand for PoM).

    Returns
    -------
    torch.nn.Module
        The mixer.

    Example
    -------
    >>> build_mixer("pom", 64, {"degree": 2}).degree
    2
    """
    mixer_class = PACKAGE_MIXERS[name]
    options = dict(options or {})
    accepted = list(inspect.signature(mixer_class).parameters)[1:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for mixer {name!r}; valid options: {accepted}"
        )
    return mixer_class(d_model, **options)


def initialise_as_transformer_asr(module):
    """Initialises a module as ``TransformerASR._init_params`` does the
    modules it builds: Xavier normal for every parameter of more than one
    dimension; biases and norms keep their constructor's values.

    Arguments
    ---------
    module : torch.nn.Module
        Initialised in place.

    Example
    -------
    >>> layer = torch.nn.Linear(4, 3)
    >>> bias = layer.bias.clone()
    >>> initialise_as_transformer_asr(layer)
    >>> torch.equal(layer.bias, bias)
    True
    """
    for parameter in module.parameters():
        if parameter.dim() > 1:
            torch.nn.init.xavier_normal_(parameter)


@dataclass
class MixerLayerStreamingContext:
    """What one Conformer layer keeps between the chunks of a stream."""

    mixer: StreamingMean
    """The chunk sums that the mixer's mean needs (see ``StreamingMean``)."""

    dcconv_left_context: torch.Tensor | None = None
    """The last ``convolution_module.padding`` input frames of the convolution
    module (Dynamic Chunk Convolution's left context); None before the first
    chunk."""


@dataclass
class MixerEncoderStreamingContext:
    """What the encoder keeps between the chunks of a stream."""

    dynchunktrain_config: DynChunkTrainConfig
    """Chunk size and left context the model streams with."""

    layers: list[MixerLayerStreamingContext]
    """One context per Conformer layer."""

    ended: bool = False
    """True once a chunk shorter than ``chunk_size`` (the last one) was seen."""


def conformer_layer_streaming(layer, x, context):
    """One chunk through a Conformer layer whose mixer streams by chunk sums.

    The same computation as ``ConformerEncoderLayer.forward`` under Dynamic
    Chunk Training, for the frames of one chunk: the mixer reads its state
    from ``context.mixer`` instead of re-reading left frames, and the
    convolution module gets its left frames from the context (and zeros on
    the right, as in training).

    Arguments
    ---------
    layer : speechbrain.lobes.models.transformer.Conformer.ConformerEncoderLayer
        A layer whose ``mha_layer`` has ``forward_streaming``.
    x : torch.Tensor
        (batch, frames, d_model) the chunk.
    context : MixerLayerStreamingContext
        Updated in place.

    Returns
    -------
    torch.Tensor
        (batch, frames, d_model).
    """
    frames = x.shape[1]
    x = x + 0.5 * layer.ffn_module1(x)
    x = x + layer.mha_layer.forward_streaming(layer.norm1(x), context.mixer)
    if context.dcconv_left_context is not None:
        x = torch.cat((context.dcconv_left_context, x), dim=1)
    context.dcconv_left_context = x[:, -layer.convolution_module.padding :]
    x = (x + layer.convolution_module(x))[:, -frames:]
    return layer.norm2(x + 0.5 * layer.ffn_module2(x))


class MixerTransformerASR(TransformerASR):
    """SpeechBrain's ``TransformerASR`` whose encoder mixer is chosen by name.

    For "RelPosMHAXL", "RoPEMHA" and "hypermixing" the model is exactly
    SpeechBrain's: built by ``TransformerASR`` with the same arguments, it has
    the same state_dict and, for a given seed, the same initial weights. For
    "pom" and "summarymixing" SpeechBrain builds the encoder and each layer's
    ``mha_layer`` is replaced; the new mixers are initialised by
    ``TransformerASR``'s own rule (Xavier normal for every parameter of more
    than one dimension).

    Arguments
    ---------
    tgt_vocab : int
        Output vocabulary of the (optional) decoder; BEST-RQ and CTC use none.
    input_size : int
        Input feature size (after the CNN front-end).
    d_model : int
        Model dimension.
    nhead : int
        Attention heads (attention baselines and HyperMixing).
    d_ffn : int
        Feed-forward width (and HyperMixing's hypernetwork width).
    max_length : int
        Length of SpeechBrain's sinusoidal position tables (its default).
    mixer : str
        One of ``MIXERS``.
    mixer_options : dict, optional
        Options of the package mixers, keyed by mixer name, e.g.
        ``{"pom": {"degree": 3, "expand": 2}}``. Only the chosen mixer's entry
        is used, so one yaml holds the options of several mixers and ``mixer``
        alone switches between them.
    causal : bool
        Causal (streaming) encoder; False by default, unlike SpeechBrain's
        TransformerASR, which turns it on when it is not given.
    **kwargs : dict
        Passed on to ``TransformerASR`` (num_encoder_layers, kernel_size, ...).

    Example
    -------
    >>> import torch
    >>> net = MixerTransformerASR(
    ...     tgt_vocab=1, input_size=64, d_model=64, nhead=4, d_ffn=128,
    ...     num_encoder_layers=2, num_decoder_layers=0,
    ...     encoder_module="conformer", normalize_before=True, mixer="pom",
    ... )
    >>> net.encode(torch.rand(2, 30, 64), torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 30, 64])
    >>> config = DynChunkTrainConfig(chunk_size=8, left_context_size=None)
    >>> net.encode(torch.rand(2, 30, 64), dynchunktrain_config=config).shape
    torch.Size([2, 30, 64])
    """

    def __init__(
        self,
        tgt_vocab,
        input_size,
        d_model=512,
        nhead=8,
        d_ffn=2048,
        max_length=2500,
        mixer="pom",
        mixer_options=None,
        causal=False,
        **kwargs,
    ):
        if mixer not in MIXERS:
            raise ValueError(f"Unknown mixer {mixer!r}; valid mixers: {list(MIXERS)}")
        if "attention_type" in kwargs:
            raise ValueError("Choose the mixer with `mixer`, not `attention_type`.")
        options_by_mixer = dict(mixer_options or {})
        strangers = sorted(set(options_by_mixer) - set(MIXERS))
        if strangers:
            raise ValueError(
                f"mixer_options must be keyed by mixer name; unknown mixer(s) "
                f"{strangers}; valid mixers: {list(MIXERS)}"
            )
        options = options_by_mixer.get(mixer) or {}
        if options and mixer not in PACKAGE_MIXERS:
            raise ValueError(
                f"mixer_options {options} given for mixer {mixer!r}, which "
                f"takes none (only {list(PACKAGE_MIXERS)} do)"
            )
        # Fail on bad options before building a large encoder, without
        # drawing from the random generator: the seed must give the weights
        # that SpeechBrain's TransformerASR gets from it.
        if mixer in PACKAGE_MIXERS:
            if kwargs.get("encoder_module") != "conformer":
                raise ValueError(f"Mixer {mixer!r} needs encoder_module='conformer'")
            with torch.random.fork_rng(devices=[]):
                build_mixer(mixer, d_model, options)
        host = mixer if mixer in SPEECHBRAIN_MIXERS else HOST_ATTENTION_TYPE
        super().__init__(
            tgt_vocab,
            input_size,
            d_model=d_model,
            nhead=nhead,
            d_ffn=d_ffn,
            max_length=max_length,
            causal=causal,
            attention_type=host,
            **kwargs,
        )
        self.mixer = mixer
        if mixer in PACKAGE_MIXERS:
            for layer in self.encoder.layers:
                layer.mha_layer = build_mixer(mixer, d_model, options)
                initialise_as_transformer_asr(layer.mha_layer)

    def encode(self, src, wav_len=None, pad_idx=0, dynchunktrain_config=None):
        """Encoder forward pass, optionally chunked (Dynamic Chunk Training).

        For this package's mixers no (time, time) mask is built: the
        ``DynChunkTrainConfig`` itself (``dynamic_chunk_mean.CAUSAL`` for a causal
        model) goes to every layer in the ``src_mask`` slot, which
        SpeechBrain's ``ConformerEncoder`` and ``ConformerEncoderLayer`` pass
        to ``mha_layer(attn_mask=...)`` untouched; the mixers recognise it and
        average per chunk window in linear time. The convolution modules get
        the config as usual (Dynamic Chunk Convolution). SpeechBrain's own
        mixers go through ``TransformerASR.encode`` unchanged. (Recognising
        SpeechBrain's chunk mask inside the mixer instead would still build
        the (time, time) mask, and cost a comparison of it per forward.)
        A tensor mask given to a mixer directly keeps the quadratic path.

        Arguments
        ---------
        src : torch.Tensor
            (batch, time, features) or (batch, time, channels, features).
        wav_len : torch.Tensor, optional
            (batch,) lengths relative to the longest.
        pad_idx : int
            Unused by the encoder (SpeechBrain's signature).
        dynchunktrain_config : DynChunkTrainConfig, optional
            Chunk size and left context (in chunks, None for all the past).

        Returns
        -------
        torch.Tensor
            (batch, time, d_model); with ``output_hidden_states``, also the
            list of hidden states.
        """
        if dynchunktrain_config is not None:
            self._check_can_chunk()
        if self.mixer not in PACKAGE_MIXERS:
            return super().encode(src, wav_len, pad_idx, dynchunktrain_config)
        if self.causal and dynchunktrain_config is not None:
            raise ValueError(
                "A causal model takes no DynChunkTrainConfig (SpeechBrain's "
                "chunked convolution needs causal=False)."
            )
        if src.dim() == 4:
            src = src.flatten(2)
        padding, _, _, _ = make_transformer_src_tgt_masks(src, None, wav_len)
        outputs = self.encoder(
            src=self.custom_src_module(src),
            src_mask=CAUSAL if self.causal else dynchunktrain_config,
            src_key_padding_mask=padding,
            pos_embs=None,
            dynchunktrain_config=dynchunktrain_config,
        )
        if self.output_hidden_states:
            encoder_out, _, hidden_states = outputs
            return encoder_out, hidden_states
        return outputs[0]

    def make_streaming_context(self, dynchunktrain_config, encoder_kwargs=None):
        """A blank streaming context, for one stream (or a batch of streams).

        For this package's mixers, per layer: the mixer's chunk sums (a ring of
        ``left_context_size`` chunk sums, or one float64 running sum when the
        left context is unlimited) and the convolution's left frames; its
        size does not grow with the audio. SpeechBrain's attention mixers get
        SpeechBrain's context (a cache of left frames, so a finite left
        context only).

        Arguments
        ---------
        dynchunktrain_config : DynChunkTrainConfig
            Chunk size (frames per ``encode_streaming`` call) and left context
            (in chunks, None for all the past), as in training.
        encoder_kwargs : dict, optional
            Passed to SpeechBrain's encoder for its own mixers.

        Returns
        -------
        TransformerASRStreamingContext

        Example
        -------
        >>> net = MixerTransformerASR(
        ...     tgt_vocab=1, input_size=20, d_model=16, nhead=2, d_ffn=32,
        ...     num_encoder_layers=2, num_decoder_layers=0,
        ...     encoder_module="conformer", normalize_before=True, mixer="pom",
        ... ).eval()
        >>> context = net.make_streaming_context(DynChunkTrainConfig(4, None))
        >>> net.encode_streaming(torch.rand(1, 4, 20), context).shape
        torch.Size([1, 4, 16])
        >>> net.encode_streaming(torch.rand(1, 3, 20), context).shape
        torch.Size([1, 3, 16])
        """
        self._check_can_chunk()
        if self.mixer not in PACKAGE_MIXERS:
            if dynchunktrain_config.is_infinite_left_context():
                raise ValueError(
                    f"Mixer {self.mixer!r} streams through SpeechBrain's cache of "
                    "left frames, which needs a finite left_context_size; "
                    f"choose one, or a mixer among {list(PACKAGE_MIXERS)}, "
                    "which stream with unlimited left context."
                )
            return super().make_streaming_context(
                dynchunktrain_config, encoder_kwargs or {}
            )
        if self.causal:
            raise ValueError(
                "Streaming needs a model trained with Dynamic Chunk Training "
                "(causal=False and a DynChunkTrainConfig)."
            )
        left_chunks = dynchunktrain_config.left_context_size
        layers = [
            MixerLayerStreamingContext(
                layer.mha_layer.make_streaming_context(left_chunks)
            )
            for layer in self.encoder.layers
        ]
        return TransformerASRStreamingContext(
            dynchunktrain_config=dynchunktrain_config,
            encoder_context=MixerEncoderStreamingContext(dynchunktrain_config, layers),
        )

    def encode_streaming(self, src, context):
        """Encodes the next chunk of a stream; see ``make_streaming_context``.

        The stream must start at the start of the utterance and every call
        take ``chunk_size`` frames (encoder frames, after the front-end), the
        last one possibly fewer: the chunks then line up with those of
        training, and the output equals ``encode(whole,
        dynchunktrain_config=config)`` frame for frame.

        Arguments
        ---------
        src : torch.Tensor
            (batch, frames, features) or (batch, frames, channels, features).
        context : TransformerASRStreamingContext
            From ``make_streaming_context``; updated in place.

        Returns
        -------
        torch.Tensor
            (batch, frames, d_model).
        """
        if self.mixer not in PACKAGE_MIXERS:
            return super().encode_streaming(src, context)
        encoder_context = context.encoder_context
        chunk_size = encoder_context.dynchunktrain_config.chunk_size
        frames = src.shape[1]
        if encoder_context.ended or frames > chunk_size:
            raise ValueError(
                f"Each chunk must have chunk_size={chunk_size} frames, only the "
                f"last fewer; got {frames} frames"
                + (" after a shorter chunk." if encoder_context.ended else ".")
            )
        encoder_context.ended = frames < chunk_size
        if src.dim() == 4:
            src = src.flatten(2)
        x = self.custom_src_module(src)
        for layer, layer_context in zip(
            self.encoder.layers, encoder_context.layers, strict=True
        ):
            x = conformer_layer_streaming(layer, x, layer_context)
        return self.encoder.norm(x)

    def _check_can_chunk(self):
        """HyperMixing ignores masks, so it can neither chunk nor stream."""
        if self.mixer == "hypermixing":
            raise ValueError(
                "HyperMixing cannot train with chunks or stream: SpeechBrain's "
                "HyperMixing ignores attention masks. Use pom, summarymixing, "
                "RelPosMHAXL or RoPEMHA."
            )
