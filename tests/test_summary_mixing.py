"""Tests for speechbrain_pom.nnet.summary_mixing.SummaryMixing."""

import pytest
import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoderLayer
from speechbrain.lobes.models.transformer.Transformer import get_lookahead_mask
from speechbrain.lobes.models.transformer.TransformerASR import (
    make_transformer_src_mask,
)
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from torch.utils._python_dispatch import TorchDispatchMode

from speechbrain_pom.nnet.summary_mixing import SummaryMixing
from speechbrain_pom.utils.dynamic_chunk_mean import CAUSAL

D_MODEL = 16
MODES = ["SummaryMixing", "SummaryMixing-lite"]


def make_mixer(mode="SummaryMixing", **kwargs):
    torch.manual_seed(0)
    return SummaryMixing(D_MODEL, mode=mode, **kwargs).eval()


def padding_mask(lengths, frames):
    """(B, frames) bool mask, True = padding."""
    return torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]


def causal_bool_mask(frames):
    """(frames, frames) bool mask, True = future frame (not allowed)."""
    return torch.ones(frames, frames, dtype=torch.bool).triu(diagonal=1)


def reference(mixer, x, lengths=None):
    """Slow, literal SummaryMixing: explicit loops and a real concatenation."""
    batch, frames, _ = x.shape
    lengths = lengths or [frames] * batch
    act = torch.nn.functional.gelu
    out = torch.zeros(batch, frames, D_MODEL)
    for b in range(batch):
        real = range(lengths[b])
        summary = sum(act(mixer.summary_transform(x[b, t])) for t in real)
        summary = summary / lengths[b]
        for t in real:
            if mixer.mode == "SummaryMixing":
                local = act(mixer.local_transform(x[b, t]))
                combiner_input = torch.cat([local, summary])
            else:
                combiner_input = summary
            out[b, t] = act(mixer.combiner(combiner_input))
    return out


@pytest.mark.parametrize("mode", MODES)
def test_output_shape_and_contract(mode):
    mixer = make_mixer(mode)
    x = torch.randn(3, 11, D_MODEL)
    result = mixer(x, x, x)
    assert isinstance(result, tuple) and len(result) == 2
    out, attn = result
    assert out.shape == x.shape
    assert attn is None


def test_key_and_value_are_ignored():
    mixer = make_mixer()
    x = torch.randn(2, 9, D_MODEL)
    other = torch.randn(2, 9, D_MODEL)
    torch.testing.assert_close(mixer(x, x, x)[0], mixer(x, other, other)[0])


def test_default_parameter_count():
    mixer = SummaryMixing(144)
    linear = 144 * 144 + 144
    combiner = 2 * 144 * 144 + 144
    assert sum(p.numel() for p in mixer.parameters()) == 2 * linear + combiner
    assert 2 * linear + combiner == 83376
    lite = SummaryMixing(144, mode="SummaryMixing-lite")
    assert sum(p.numel() for p in lite.parameters()) == 2 * linear


def test_invalid_mode():
    with pytest.raises(ValueError):
        SummaryMixing(D_MODEL, mode="attention")


@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_without_padding(mode):
    mixer = make_mixer(mode)
    x = torch.randn(3, 13, D_MODEL)
    with torch.no_grad():
        out, _ = mixer(x, x, x)
        expected = reference(mixer, x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_with_padding(mode):
    mixer = make_mixer(mode)
    lengths = [13, 7, 1]
    x = torch.randn(3, 13, D_MODEL)
    with torch.no_grad():
        out, _ = mixer(x, x, x, key_padding_mask=padding_mask(lengths, 13))
        expected = reference(mixer, x, lengths)
    for b, length in enumerate(lengths):
        torch.testing.assert_close(
            out[b, :length], expected[b, :length], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("mode", MODES)
def test_padding_length_and_content_invariance(mode):
    mixer = make_mixer(mode)
    lengths = [10, 6]
    x = torch.randn(2, 10, D_MODEL)
    out, _ = mixer(x, x, x, key_padding_mask=padding_mask(lengths, 10))

    # Longer padding filled with garbage, including non-finite values.
    longer = torch.randn(2, 25, D_MODEL) * 100
    longer[1, 20] = float("nan")
    longer[0, 15] = float("inf")
    for b, length in enumerate(lengths):
        longer[b, :length] = x[b, :length]
    out_longer, _ = mixer(
        longer, longer, longer, key_padding_mask=padding_mask(lengths, 25)
    )

    for b, length in enumerate(lengths):
        alone, _ = mixer(x[b : b + 1, :length], None, None)
        torch.testing.assert_close(out[b, :length], alone[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            out_longer[b, :length], alone[0], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("mode", MODES)
def test_permutation_equivariance(mode):
    mixer = make_mixer(mode)
    x = torch.randn(2, 12, D_MODEL)
    permutation = torch.randperm(12)
    out, _ = mixer(x, x, x)
    shuffled = x[:, permutation]
    out_shuffled, _ = mixer(shuffled, shuffled, shuffled)
    torch.testing.assert_close(out_shuffled, out[:, permutation], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_global_context(mode):
    mixer = make_mixer(mode)
    x = torch.randn(1, 8, D_MODEL)
    changed = x.clone()
    changed[0, 3] += 1.0
    out, _ = mixer(x, x, x)
    out_changed, _ = mixer(changed, changed, changed)
    other_frames = [t for t in range(8) if t != 3]
    difference = (out_changed - out)[0, other_frames].abs().amax(dim=-1)
    assert (difference > 1e-6).all()


@pytest.mark.parametrize("mode", MODES)
def test_causal_mask_equals_prefix(mode):
    mixer = make_mixer(mode)
    frames = 9
    x = torch.randn(2, frames, D_MODEL)
    out, _ = mixer(x, x, x, attn_mask=causal_bool_mask(frames))
    for t in range(frames):
        prefix = x[:, : t + 1]
        expected, _ = mixer(prefix, prefix, prefix)
        torch.testing.assert_close(out[:, t], expected[:, t], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_causal_mask_with_padding_equals_prefix(mode):
    mixer = make_mixer(mode)
    lengths = [9, 5]
    x = torch.randn(2, 9, D_MODEL)
    x[1, 5:] = float("nan")
    out, _ = mixer(
        x,
        x,
        x,
        attn_mask=causal_bool_mask(9),
        key_padding_mask=padding_mask(lengths, 9),
    )
    for b, length in enumerate(lengths):
        for t in range(length):
            prefix = x[b : b + 1, : t + 1]
            expected, _ = mixer(prefix, prefix, prefix)
            torch.testing.assert_close(out[b, t], expected[0, t], rtol=1e-5, atol=1e-6)


def test_float_additive_mask_matches_bool_mask():
    mixer = make_mixer()
    x = torch.randn(2, 7, D_MODEL)
    float_mask = get_lookahead_mask(x)
    assert float_mask.dtype.is_floating_point
    out_float, _ = mixer(x, x, x, attn_mask=float_mask)
    out_bool, _ = mixer(x, x, x, attn_mask=causal_bool_mask(7))
    torch.testing.assert_close(out_float, out_bool)


def test_chunked_mask_uses_visible_frames_only():
    mixer = make_mixer()
    x = torch.randn(1, 6, D_MODEL)
    # Two chunks of three frames; each frame sees only its own chunk.
    chunk = torch.arange(6) // 3
    mask = chunk[:, None] != chunk[None, :]
    out, _ = mixer(x, x, x, attn_mask=mask)
    first, _ = mixer(x[:, :3], None, None)
    second, _ = mixer(x[:, 3:], None, None)
    torch.testing.assert_close(out[:, :3], first, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[:, 3:], second, rtol=1e-5, atol=1e-6)


def test_all_zero_mask_matches_no_mask():
    mixer = make_mixer()
    x = torch.randn(2, 7, D_MODEL)
    pad = padding_mask([7, 4], 7)
    full = torch.zeros(7, 7, dtype=torch.bool)
    out_masked, _ = mixer(x, x, x, attn_mask=full, key_padding_mask=pad)
    out, _ = mixer(x, x, x, key_padding_mask=pad)
    torch.testing.assert_close(out_masked[0], out[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_masked[1, :4], out[1, :4], rtol=1e-5, atol=1e-6)


class OpRecorder(TorchDispatchMode):
    """Records (op name, shape, dtype) of every tensor produced by an aten op."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(value, torch.Tensor):
                self.outputs.append((str(func), tuple(value.shape), value.dtype))
        return result


@pytest.mark.parametrize("mode", MODES)
def test_padding_path_never_builds_frames_by_frames(mode):
    mixer = make_mixer(mode)
    frames = 37
    x = torch.randn(2, frames, D_MODEL)
    recorder = OpRecorder()
    with recorder:
        mixer(x, x, x, key_padding_mask=padding_mask([37, 20], frames))
    shapes = [shape for _, shape, _ in recorder.outputs]
    assert shapes
    assert all(shape.count(frames) < 2 for shape in shapes)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_autocast_averages_in_float32(causal):
    mixer = make_mixer()
    x = torch.randn(2, 20, D_MODEL)
    attn_mask = causal_bool_mask(20) if causal else None
    recorder = OpRecorder()
    with recorder, torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=padding_mask([20, 9], 20))
    averaging_op = "aten.bmm" if causal else "aten.sum.dim_IntList"
    averaging = [
        dtype
        for op, _, dtype in recorder.outputs
        if op.startswith(averaging_op) and dtype.is_floating_point
    ]
    assert averaging and all(dtype == torch.float32 for dtype in averaging)
    linear_dtypes = {dtype for op, _, dtype in recorder.outputs if "addmm" in op}
    assert linear_dtypes == {torch.bfloat16}


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_parameter(mode):
    mixer = make_mixer(mode).train()
    x = torch.randn(2, 10, D_MODEL, requires_grad=True)
    pad = padding_mask([10, 6], 10)
    out, _ = mixer(x, x, x, attn_mask=causal_bool_mask(10), key_padding_mask=pad)
    out[~pad].sum().backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_autocast_on_cpu(mode, causal):
    mixer = make_mixer(mode)
    x = torch.randn(2, 40, D_MODEL)
    pad = padding_mask([40, 25], 40)
    attn_mask = causal_bool_mask(40) if causal else None
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out, attn = mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=pad)
    assert attn is None
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    expected, _ = mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=pad)
    torch.testing.assert_close(out[~pad].float(), expected[~pad], rtol=5e-2, atol=5e-2)


def test_dropout_only_in_training():
    mixer = make_mixer(dropout=0.5)
    x = torch.randn(2, 10, D_MODEL)
    torch.testing.assert_close(mixer(x, x, x)[0], mixer(x, x, x)[0])
    mixer.train()
    assert not torch.equal(mixer(x, x, x)[0], mixer(x, x, x)[0])


def test_drop_in_for_conformer_self_attention():
    torch.manual_seed(0)
    layer = ConformerEncoderLayer(
        d_model=D_MODEL, d_ffn=32, nhead=4, attention_type="regularMHA"
    ).eval()
    layer.mha_layer = SummaryMixing(D_MODEL)
    x = torch.randn(2, 12, D_MODEL)
    pad = padding_mask([12, 8], 12)
    out, attn = layer(x, src_key_padding_mask=pad, src_mask=causal_bool_mask(12))
    assert out.shape == x.shape
    assert attn is None
    assert torch.isfinite(out).all()


# ------------------------------------------- linear chunked path, streaming

EXACT = {"rtol": 1e-10, "atol": 1e-12}


def outputs_and_grads(mixer, x, attn_mask, pad):
    """Output and gradients (input, parameters) of a fixed projection of it."""
    x = x.clone().requires_grad_()
    out, _ = mixer(x, None, None, attn_mask=attn_mask, key_padding_mask=pad)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights)[~pad].sum().backward()
    grads = {name: p.grad.clone() for name, p in mixer.named_parameters()}
    mixer.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize("left_chunks", [None, 0, 2])
def test_chunked_config_equals_quadratic_mask(mode, chunk, left_chunks):
    """The linear path equals the (T x T) mask path: outputs and gradients."""
    mixer = make_mixer(mode).double()
    frames = 13  # a multiple of no chunk size but 1: a partial last chunk
    x = torch.randn(3, frames, D_MODEL, dtype=torch.float64)
    x[1, 9:] = 30.0  # padding content must not matter
    pad = padding_mask([13, 9, 2], frames)
    config = DynChunkTrainConfig(chunk_size=chunk, left_context_size=left_chunks)
    mask = make_transformer_src_mask(x, dynchunktrain_config=config)
    linear = outputs_and_grads(mixer, x, config, pad)
    quadratic = outputs_and_grads(mixer, x, mask, pad)
    torch.testing.assert_close(linear[0][~pad], quadratic[0][~pad], **EXACT)
    torch.testing.assert_close(linear[1], quadratic[1], **EXACT)
    for name, grad in quadratic[2].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(linear[2][name], grad, **EXACT, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_causal_config_equals_causal_mask(mode):
    mixer = make_mixer(mode).double()
    x = torch.randn(2, 10, D_MODEL, dtype=torch.float64)
    pad = padding_mask([10, 6], 10)
    linear = outputs_and_grads(mixer, x, CAUSAL, pad)
    quadratic = outputs_and_grads(mixer, x, get_lookahead_mask(x), pad)
    for got, expected in zip(linear[:2], quadratic[:2], strict=True):
        torch.testing.assert_close(got, expected, **EXACT)


@pytest.mark.parametrize("left_chunks", [None, 2])
def test_chunked_path_never_builds_frames_by_frames(left_chunks):
    mixer = make_mixer().train()
    frames = 37
    x = torch.randn(2, frames, D_MODEL, requires_grad=True)
    config = DynChunkTrainConfig(chunk_size=2, left_context_size=left_chunks)
    recorder = OpRecorder()
    with recorder:
        out, _ = mixer(
            x, x, x, attn_mask=config, key_padding_mask=padding_mask([37, 20], 37)
        )
        out.pow(2).sum().backward()
    assert any("backward" in op for op, _, _ in recorder.outputs)
    shapes = [shape for _, shape, _ in recorder.outputs]
    assert all(sum(size >= frames for size in shape) < 2 for shape in shapes)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("left_chunks", [None, 0, 2])
def test_streaming_equals_chunked_training(mode, left_chunks):
    mixer = make_mixer(mode)
    chunk = 3
    x = torch.randn(2, 11, D_MODEL)
    config = DynChunkTrainConfig(chunk_size=chunk, left_context_size=left_chunks)
    context = mixer.make_streaming_context(left_chunks)
    with torch.no_grad():
        expected, _ = mixer(x, x, x, attn_mask=config)
        streamed = torch.cat(
            [
                mixer.forward_streaming(x[:, start : start + chunk], context)
                for start in range(0, 11, chunk)
            ],
            dim=1,
        )
    torch.testing.assert_close(streamed, expected, rtol=1e-5, atol=1e-6)
