"""Tests for MixerTransformerASR, the mixer-selectable Conformer."""

from collections import deque

import pytest
import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoderLayer
from speechbrain.lobes.models.transformer.Transformer import get_lookahead_mask
from speechbrain.lobes.models.transformer.TransformerASR import (
    TransformerASR,
    make_transformer_src_mask,
)
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from torch.utils._python_dispatch import TorchDispatchMode

from speechbrain_pom.lobes.models.transformer.MixerTransformerASR import (
    MIXERS,
    PACKAGE_MIXERS,
    SPEECHBRAIN_MIXERS,
    MixerTransformerASR,
    build_mixer,
)
from speechbrain_pom.nnet.pom import PoM
from speechbrain_pom.nnet.summary_mixing import SummaryMixing
from speechbrain_pom.utils.dynamic_chunk_mean import CAUSAL

INPUT_SIZE = 20
SETTINGS = dict(
    tgt_vocab=1,
    input_size=INPUT_SIZE,
    d_model=64,
    nhead=4,
    d_ffn=128,
    num_encoder_layers=2,
    num_decoder_layers=0,
    encoder_module="conformer",
    normalize_before=True,
    causal=False,
)


def build(mixer, **overrides):
    torch.manual_seed(0)
    return MixerTransformerASR(mixer=mixer, **{**SETTINGS, **overrides}).eval()


def padding_from_wav_lens(wav_lens, frames):
    """True on padded frames, as SpeechBrain derives it from relative lengths."""
    lengths = torch.round(wav_lens * frames)
    return torch.arange(frames)[None, :] >= lengths[:, None]


class Spy(torch.nn.Module):
    """Stands in for ``mha_layer``: records its calls, returns (output, marker)."""

    def __init__(self, inner=None, marker="spy-attention"):
        super().__init__()
        self.inner = inner
        self.marker = marker
        self.calls = []

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.inner is not None:
            return self.inner(*args, **kwargs)
        return torch.zeros_like(args[0]), self.marker


# ------------------------------------------------------------ every mixer


@pytest.mark.parametrize("mixer", MIXERS)
def test_encode_forward_backward_with_padding(mixer):
    net = build(mixer).train()
    x = torch.randn(2, 30, INPUT_SIZE)
    wav_lens = torch.tensor([1.0, 0.7])
    out = net.encode(x, wav_lens)
    assert out.shape == (2, 30, SETTINGS["d_model"])
    assert torch.isfinite(out).all()
    pad = padding_from_wav_lens(wav_lens, 30)
    out[~pad].pow(2).mean().backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.requires_grad}
    assert grads
    for name, grad in grads.items():
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
    mixer_grads = [g for n, g in grads.items() if ".mha_layer." in n]
    assert mixer_grads and any(g.abs().sum() > 0 for g in mixer_grads)


@pytest.mark.parametrize("mixer", MIXERS)
def test_layers_hold_the_chosen_mixer(mixer):
    net = build(mixer)
    assert net.mixer == mixer
    layers = net.encoder.layers
    assert len(layers) == SETTINGS["num_encoder_layers"]
    for layer in layers:
        assert isinstance(layer, ConformerEncoderLayer)
        if mixer in PACKAGE_MIXERS:
            assert type(layer.mha_layer) is PACKAGE_MIXERS[mixer]
        else:
            assert type(layer.mha_layer).__name__.lower() == mixer.lower()
    # Each layer has its own mixer (no shared weights).
    assert layers[0].mha_layer is not layers[1].mha_layer


def test_mixer_options_reach_every_layer():
    net = build(
        "pom", mixer_options={"pom": {"degree": 2, "expand": 1, "formulation": "C"}}
    )
    for layer in net.encoder.layers:
        mixer = layer.mha_layer
        assert isinstance(mixer, PoM)
        assert mixer.degree == 2 and mixer.formulation == "C"
        assert mixer.expand_proj.out_features == SETTINGS["d_model"]
        assert mixer.coefficients.shape == (SETTINGS["d_model"], 2)
    net = build(
        "summarymixing", mixer_options={"summarymixing": {"mode": "SummaryMixing-lite"}}
    )
    assert all(
        isinstance(layer.mha_layer, SummaryMixing)
        and layer.mha_layer.mode == "SummaryMixing-lite"
        for layer in net.encoder.layers
    )


# ------------------------------------ the mha_layer mechanism we rely on


def test_conformer_layer_calls_mha_layer_as_expected():
    torch.manual_seed(0)
    d = 16
    layer = ConformerEncoderLayer(
        d_model=d, d_ffn=32, nhead=2, kernel_size=3, attention_type="RoPEMHA"
    ).eval()
    spy = Spy()
    layer.mha_layer = spy
    x = torch.randn(2, 9, d)
    pad = torch.arange(9)[None, :] >= torch.tensor([[9], [6]])
    attn_mask = torch.zeros(9, 9, dtype=torch.bool)
    pos_embs = torch.randn(1, 17, d)
    with torch.no_grad():
        out, attention = layer(
            x, src_mask=attn_mask, src_key_padding_mask=pad, pos_embs=pos_embs
        )

        # What the layer computes when its mixer branch outputs zeros.
        x1 = x + 0.5 * layer.ffn_module1(x)
        x3 = x1 + layer.convolution_module(x1, pad.unsqueeze(-1))
        expected = layer.norm2(x3 + 0.5 * layer.ffn_module2(x3))

    # The second element of the mixer's tuple is passed through as attention.
    assert attention == "spy-attention"
    torch.testing.assert_close(out, expected)
    assert len(spy.calls) == 1
    args, kwargs = spy.calls[0]
    assert len(args) == 3 and args[0] is args[1] is args[2]
    torch.testing.assert_close(args[0], layer.norm1(x1))
    assert set(kwargs) == {"attn_mask", "key_padding_mask", "pos_embs"}
    assert kwargs["attn_mask"] is attn_mask
    assert kwargs["key_padding_mask"] is pad
    assert kwargs["pos_embs"] is pos_embs

    # And the first element is really used: a non-zero branch changes the output.
    layer.mha_layer = PoM(d)
    with torch.no_grad():
        other, attention = layer(x, src_key_padding_mask=pad)
    assert attention is None
    assert not torch.allclose(other, out)


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
def test_encode_passes_padding_mask_and_no_positions(mixer):
    net = build(mixer)  # default positional_encoding="fixed_abs_sine"
    frames = 30
    wav_lens = torch.tensor([1.0, 0.7])
    spies = []
    for layer in net.encoder.layers:
        spies.append(Spy(inner=layer.mha_layer))
        layer.mha_layer = spies[-1]
    first_layer_inputs = []
    net.encoder.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: first_layer_inputs.append(args[0]),
        with_kwargs=True,
    )
    x = torch.randn(2, frames, INPUT_SIZE)
    with torch.no_grad():
        net.encode(x, wav_lens)
        # The encoder's input is the front-end output, with nothing added.
        torch.testing.assert_close(first_layer_inputs[0], net.custom_src_module(x))

    expected_pad = padding_from_wav_lens(wav_lens, frames)
    assert expected_pad[1].sum() == 9  # 21 real frames of 30
    for spy in spies:
        assert len(spy.calls) == 1
        _, kwargs = spy.calls[0]
        assert kwargs["pos_embs"] is None
        assert kwargs["attn_mask"] is None  # causal=False, no chunking
        key_padding_mask = kwargs["key_padding_mask"]
        assert key_padding_mask.dtype == torch.bool
        assert torch.equal(key_padding_mask, expected_pad)


def test_pom_encoder_matches_manual_computation():
    """encode() == front-end, Conformer layers with PoM, final norm; no positions."""
    net = build("pom")
    x = torch.randn(2, 30, INPUT_SIZE)
    wav_lens = torch.tensor([1.0, 0.7])
    pad = padding_from_wav_lens(wav_lens, 30)
    with torch.no_grad():
        out = net.encode(x, wav_lens)
        h = net.custom_src_module(x)
        for layer in net.encoder.layers:
            h, attention = layer(h, src_key_padding_mask=pad)
            assert attention is None
        expected = net.encoder.norm(h)
    torch.testing.assert_close(out, expected)


# ------------------------------------------------ SpeechBrain's own mixers


def state_shapes(module):
    return [(name, tuple(value.shape)) for name, value in module.state_dict().items()]


@pytest.mark.parametrize("mixer", SPEECHBRAIN_MIXERS)
def test_speechbrain_mixers_are_speechbrains_model(mixer):
    ours = build(mixer)
    torch.manual_seed(0)
    reference = TransformerASR(attention_type=mixer, **SETTINGS).eval()
    assert state_shapes(ours) == state_shapes(reference)
    # The same seed gives the same weights, so the same outputs.
    for (name, value), expected in zip(
        ours.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, expected), name
    x = torch.randn(2, 25, INPUT_SIZE)
    wav_lens = torch.tensor([1.0, 0.6])
    with torch.no_grad():
        torch.testing.assert_close(
            ours.encode(x, wav_lens), reference.encode(x, wav_lens)
        )


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
def test_package_mixers_are_initialised_as_transformer_asr(mixer):
    ours = build(mixer)
    # Checking the options draws no random numbers: everything but the mixers
    # is SpeechBrain's host model, weight for weight.
    torch.manual_seed(0)
    host = TransformerASR(attention_type="RoPEMHA", **SETTINGS)
    host_state = host.state_dict()
    for name, value in ours.state_dict().items():
        if ".mha_layer." not in name:
            assert torch.equal(value, host_state[name]), name
    # Xavier normal, as TransformerASR._init_params, on every matrix of the
    # mixers (PyTorch's default for Linear is a uniform of another scale).
    for layer in ours.encoder.layers:
        for name, parameter in layer.mha_layer.named_parameters():
            if parameter.dim() > 1:
                fan_out, fan_in = parameter.shape[0], parameter[0].numel()
                expected_std = (2.0 / (fan_in + fan_out)) ** 0.5
                assert parameter.std().item() == pytest.approx(
                    expected_std, rel=0.15
                ), name


# ------------------------------------------------------------------ errors


def test_unknown_mixer_lists_valid_ones():
    with pytest.raises(ValueError) as error:
        build("attention")
    message = str(error.value)
    assert "attention" in message
    for name in MIXERS:
        assert name in message


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
def test_unknown_mixer_option_is_named(mixer):
    with pytest.raises(ValueError, match="degre_typo"):
        build(mixer, mixer_options={mixer: {"degre_typo": 3}})
    with pytest.raises(ValueError, match="degre_typo"):
        build_mixer(mixer, 16, {"degre_typo": 3})


@pytest.mark.parametrize("mixer", SPEECHBRAIN_MIXERS)
def test_mixer_options_rejected_for_speechbrain_mixers(mixer):
    with pytest.raises(ValueError, match=mixer):
        build(mixer, mixer_options={mixer: {"degree": 3}})


def test_other_misuse_is_rejected():
    with pytest.raises(ValueError):
        build("pom", attention_type="RoPEMHA")
    with pytest.raises(ValueError, match="conformer"):
        build("pom", encoder_module="transformer")
    with pytest.raises(ValueError):  # PoM's own validation, before building
        build("pom", mixer_options={"pom": {"formulation": "Z"}})


def test_options_keyed_by_mixer_let_the_mixer_name_alone_switch():
    options = {"pom": {"degree": 2, "expand": 1}}
    pom_net = build("pom", mixer_options=options)
    assert pom_net.encoder.layers[0].mha_layer.degree == 2
    # The same options, another mixer: PoM's entry is simply not used.
    for mixer in ("summarymixing", "RelPosMHAXL"):
        assert build(mixer, mixer_options=options).mixer == mixer


def test_options_not_keyed_by_mixer_name_are_an_error():
    with pytest.raises(ValueError, match="keyed by mixer name.*'degree'"):
        build("pom", mixer_options={"degree": 2})


# -------------------------------------------------- chunked training, streaming

STREAM_SETTINGS = {**SETTINGS, "d_model": 16, "nhead": 2, "d_ffn": 32, "kernel_size": 5}
STREAM_TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32, another summation order


def build_small(mixer, **overrides):
    torch.manual_seed(0)
    net = MixerTransformerASR(mixer=mixer, **{**STREAM_SETTINGS, **overrides})
    return net.eval()


def encode_with_tensor_mask(net, x, wav_lens, attn_mask, config):
    """The same layers driven with a (time, time) mask: the quadratic path."""
    pad = padding_from_wav_lens(wav_lens, x.shape[1])
    h = net.custom_src_module(x)
    for layer in net.encoder.layers:
        h, _ = layer(
            h, src_mask=attn_mask, src_key_padding_mask=pad, dynchunktrain_config=config
        )
    return net.encoder.norm(h)


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
@pytest.mark.parametrize("left_chunks", [None, 1])
def test_chunked_encode_equals_quadratic_mask(mixer, left_chunks):
    net = build_small(mixer)
    x = torch.randn(2, 14, INPUT_SIZE)
    wav_lens = torch.tensor([1.0, 0.75])
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=left_chunks)
    mask = make_transformer_src_mask(x, dynchunktrain_config=config)
    with torch.no_grad():
        out = net.encode(x, wav_lens, dynchunktrain_config=config)
        expected = encode_with_tensor_mask(net, x, wav_lens, mask, config)
    real = ~padding_from_wav_lens(wav_lens, 14)
    torch.testing.assert_close(out[real], expected[real], **STREAM_TOL)


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
def test_causal_encode_equals_causal_mask(mixer):
    net = build_small(mixer, causal=True)
    x = torch.randn(2, 9, INPUT_SIZE)
    wav_lens = torch.tensor([1.0, 0.7])
    with torch.no_grad():
        out = net.encode(x, wav_lens)
        expected = encode_with_tensor_mask(
            net, x, wav_lens, get_lookahead_mask(x), None
        )
    real = ~padding_from_wav_lens(wav_lens, 9)
    torch.testing.assert_close(out[real], expected[real], **STREAM_TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_the_config_reaches_the_mixer_not_a_mask(causal):
    net = build_small("pom", causal=causal)
    spies = []
    for layer in net.encoder.layers:
        spies.append(Spy(inner=layer.mha_layer))
        layer.mha_layer = spies[-1]
    config = None if causal else DynChunkTrainConfig(4, 2)
    with torch.no_grad():
        net.encode(torch.randn(1, 10, INPUT_SIZE), dynchunktrain_config=config)
    for spy in spies:
        assert spy.calls[0][1]["attn_mask"] is (CAUSAL if causal else config)


class ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor produced by an aten op."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(value, torch.Tensor):
                self.shapes.append(tuple(value.shape))
        return result


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
def test_chunked_encode_builds_no_frames_by_frames_tensor(mixer):
    net = build_small(mixer).train()
    frames = 101
    x = torch.randn(2, frames, INPUT_SIZE)
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=2)
    recorder = ShapeRecorder()
    with recorder:
        out = net.encode(x, torch.tensor([1.0, 0.6]), dynchunktrain_config=config)
        out.sum().backward()
    assert len(recorder.shapes) > 100
    assert all(sum(size >= frames for size in shape) < 2 for shape in recorder.shapes)
    # Control: SpeechBrain's own encode() builds the (frames, frames) mask.
    control = ShapeRecorder()
    with control, torch.no_grad():
        TransformerASR.encode(net, x, dynchunktrain_config=config)
    assert (frames, frames) in control.shapes


def stream_encode(net, x, config):
    """Feeds ``x`` to ``encode_streaming`` chunk by chunk."""
    context = net.make_streaming_context(config)
    chunk = config.chunk_size
    pieces = [
        net.encode_streaming(x[:, start : start + chunk], context)
        for start in range(0, x.shape[1], chunk)
    ]
    return torch.cat(pieces, dim=1), context


@pytest.mark.parametrize("mixer", list(PACKAGE_MIXERS))
@pytest.mark.parametrize("left_chunks", [None, 0, 2])
def test_streaming_equals_chunked_encode(mixer, left_chunks):
    net = build_small(mixer)
    x = torch.randn(2, 18, INPUT_SIZE)  # 4 chunks of 4 and one of 2
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=left_chunks)
    with torch.no_grad():
        expected = net.encode(x, dynchunktrain_config=config)
        streamed, _ = stream_encode(net, x, config)
        offline = net.encode(x)
    torch.testing.assert_close(streamed, expected, **STREAM_TOL)
    # Not trivially so: without chunks the output differs.
    assert not torch.allclose(streamed, offline, **STREAM_TOL)


def test_rope_attention_streams_through_speechbrain():
    net = build_small("RoPEMHA")
    x = torch.randn(1, 16, INPUT_SIZE)
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=2)
    with torch.no_grad():
        expected = net.encode(x, dynchunktrain_config=config)
        streamed, context = stream_encode(net, x, config)
    assert type(context.encoder_context).__name__ == "ConformerEncoderStreamingContext"
    torch.testing.assert_close(streamed, expected, **STREAM_TOL)


def held_tensor_shapes(context):
    """Shapes of every tensor reachable from a streaming context."""
    if isinstance(context, torch.Tensor):
        return [tuple(context.shape)]
    if isinstance(context, (list, tuple, deque)):
        children = context
    elif hasattr(context, "__dict__"):
        children = vars(context).values()
    else:
        return []
    return [shape for child in children for shape in held_tensor_shapes(child)]


@pytest.mark.parametrize("left_chunks", [None, 2])
def test_streaming_context_size_is_constant(left_chunks):
    net = build_small("pom")
    config = DynChunkTrainConfig(chunk_size=2, left_context_size=left_chunks)
    with torch.no_grad():
        _, after_10 = stream_encode(net, torch.randn(1, 20, INPUT_SIZE), config)
        _, after_25 = stream_encode(net, torch.randn(1, 50, INPUT_SIZE), config)
    shapes = held_tensor_shapes(after_10)
    # Per layer: the convolution's left frames, and the chunk sums.
    assert len(shapes) == 2 * (2 if left_chunks is None else 1 + left_chunks)
    assert shapes == held_tensor_shapes(after_25)


def test_streaming_chunks_must_line_up_with_training():
    net = build_small("pom")
    context = net.make_streaming_context(DynChunkTrainConfig(4, None))
    with torch.no_grad():
        with pytest.raises(ValueError, match="chunk_size=4"):
            net.encode_streaming(torch.randn(1, 5, INPUT_SIZE), context)
        net.encode_streaming(torch.randn(1, 3, INPUT_SIZE), context)
        with pytest.raises(ValueError, match="after a shorter chunk"):
            net.encode_streaming(torch.randn(1, 4, INPUT_SIZE), context)


@pytest.mark.parametrize("mixer", ["RelPosMHAXL", "RoPEMHA"])
def test_attention_cannot_stream_unlimited_left_context(mixer):
    net = build_small(mixer)
    with pytest.raises(ValueError, match="finite left_context_size"):
        net.make_streaming_context(DynChunkTrainConfig(4, None))


def test_hypermixing_refuses_chunks_and_streaming():
    net = build_small("hypermixing")
    config = DynChunkTrainConfig(4, 2)
    with pytest.raises(ValueError, match="HyperMixing"):
        net.encode(torch.randn(1, 8, INPUT_SIZE), dynchunktrain_config=config)
    with pytest.raises(ValueError, match="HyperMixing"):
        net.make_streaming_context(config)
