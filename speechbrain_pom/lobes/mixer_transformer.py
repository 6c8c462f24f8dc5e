"""SpeechBrain's TransformerASR / Conformer encoder with the token mixer chosen by name.

SpeechBrain's ``ConformerEncoderLayer`` calls its token mixer as
``self.mha_layer(x, x, x, attn_mask=..., key_padding_mask=..., pos_embs=...)``
and unpacks ``(output, attention)``. Any module with that signature can take
the place of ``mha_layer``, so the encoder is built by SpeechBrain itself and
the mixers that SpeechBrain does not know (PoM, SummaryMixing) are put in each
layer afterwards. SpeechBrain's source is not modified.

Authors
* speechbrain-pom contributors 2026
"""

import inspect

from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.nnet.hypermixing import HyperMixing

from speechbrain_pom.nnet.pom import PoM
from speechbrain_pom.nnet.summary_mixing import SummaryMixing

# Mixers that SpeechBrain builds itself, by its own ``attention_type``.
SPEECHBRAIN_MIXERS = ("RelPosMHAXL", "RoPEMHA", "hypermixing")
# Mixers of this package: module class, built with (d_model, **options).
PACKAGE_MIXERS = {"pom": PoM, "summarymixing": SummaryMixing}
MIXERS = tuple(PACKAGE_MIXERS) + SPEECHBRAIN_MIXERS
# SpeechBrain attention type that hosts a package mixer: it adds no positional
# encoding and passes no positional embeddings, which a mean-based mixer
# ignores anyway (order comes from the convolution module).
HOST_ATTENTION_TYPE = "RoPEMHA"
# The decoder's positional table, which SpeechBrain builds without a decoder.
DECODER_POSITIONS = "positional_encoding_decoder.pe"


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


class MixerTransformerASR(TransformerASR):
    """SpeechBrain's ``TransformerASR`` whose encoder mixer is chosen by name.

    For "RelPosMHAXL", "RoPEMHA" and "hypermixing" the model is exactly
    SpeechBrain's (same parameter names as its recipes), except that
    HyperMixing gets ``max_length`` (SpeechBrain leaves it at 3000 frames,
    which breaks longer inputs). For "pom" and "summarymixing" SpeechBrain
    builds the encoder and each layer's ``mha_layer`` is replaced.

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
        Longest input in frames for the mixers that need one (HyperMixing).
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
        # Fail on bad options before building a large encoder.
        if mixer in PACKAGE_MIXERS:
            if kwargs.get("encoder_module") != "conformer":
                raise ValueError(f"Mixer {mixer!r} needs encoder_module='conformer'")
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
        if kwargs.get("num_decoder_layers") == 0 and hasattr(
            self, "positional_encoding_decoder"
        ):
            # SpeechBrain builds a (1, max_length, d_model) decoder positional
            # table even without a decoder.
            del self.positional_encoding_decoder
        for layer in self.encoder.layers:
            if mixer == "hypermixing" and hasattr(layer, "mha_layer"):
                layer.mha_layer = HyperMixing(
                    input_output_dim=d_model,
                    hypernet_size=d_ffn,
                    tied=False,
                    num_heads=nhead,
                    fix_tm_hidden_size=False,
                    max_length=max_length,
                )
            elif mixer in PACKAGE_MIXERS:
                layer.mha_layer = build_mixer(mixer, d_model, options)
        self._keep_sinusoids_out_of_checkpoints()

    def _keep_sinusoids_out_of_checkpoints(self):
        """Sinusoidal position tables are rebuilt with the model, so they are
        not saved: with max_length 100000 they made the checkpoints of a
        3.3M-parameter model 70 MB (and 20 times that with HyperMixing, one
        table per layer). Checkpoints saved with them still load."""
        self._fixed_tables = [DECODER_POSITIONS]
        for name, module in self.named_modules():
            if isinstance(module, PositionalEncoding):
                table = module.pe
                del module.pe
                module.register_buffer("pe", table, persistent=False)
                self._fixed_tables.append(f"{name}.pe")
        self._register_load_state_dict_pre_hook(self._drop_fixed_tables)

    def _drop_fixed_tables(self, state_dict, prefix, *args):
        """Load hook: ignores the position tables of older checkpoints."""
        for name in self._fixed_tables:
            state_dict.pop(prefix + name, None)
