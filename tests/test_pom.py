"""Tests for speechbrain_pom.nnet.pom.PoM (the Polynomial Mixer)."""

import math

import pytest
import torch
import torch.nn.functional as F
from speechbrain.lobes.models.transformer.Transformer import get_lookahead_mask
from speechbrain.lobes.models.transformer.TransformerASR import (
    make_transformer_src_mask,
)
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

import speechbrain_pom.nnet.pom as pom_module
from speechbrain_pom.nnet.pom import PoM
from speechbrain_pom.utils.dynamic_chunk_mean import CAUSAL

D_MODEL = 8
FORMULATIONS = ["A", "C"]
TOL = {"rtol": 1e-5, "atol": 1e-6}


def make_mixer(formulation="A", degree=3, expand=2, **kwargs):
    """A PoM in eval mode; formulation C gets coefficients of order 1 so that
    its output is not ~0 (the near-zero initialisation would hide errors)."""
    torch.manual_seed(0)
    mixer = PoM(
        D_MODEL, degree=degree, expand=expand, formulation=formulation, **kwargs
    )
    if formulation == "C":
        with torch.no_grad():
            mixer.coefficients.normal_(0.0, 0.5)
    return mixer.eval()


def padding_mask(lengths, frames):
    """(B, frames) bool mask, True = padding."""
    return torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]


def causal_bool_mask(frames):
    """(frames, frames) bool mask, True = future frame (not allowed)."""
    return torch.ones(frames, frames, dtype=torch.bool).triu(diagonal=1)


def reference(mixer, x, lengths=None):
    """Slow, literal PoM from pom.md: explicit loops over batch and time."""
    batch, frames, _ = x.shape
    lengths = lengths or [frames] * batch
    k = mixer.degree
    W_p, b_p = mixer.expand_proj.weight, mixer.expand_proj.bias
    W_s, b_s = mixer.gate_proj.weight, mixer.gate_proj.bias
    W_o, b_o = mixer.out_proj.weight, mixer.out_proj.bias
    out = torch.zeros(batch, frames, D_MODEL, dtype=x.dtype)
    for b in range(batch):
        polys = []
        for t in range(lengths[b]):
            z = W_p @ x[b, t] + b_p
            if mixer.formulation == "A":
                chunks = torch.chunk(F.gelu(z), k)
                monomials = [chunks[0]]
                for m in range(1, k):
                    monomials.append(monomials[-1] * chunks[m])
                polys.append(torch.cat(monomials))
            else:
                h = torch.clamp(F.leaky_relu(z, 0.01), -0.1, 6.0)
                c = mixer.coefficients
                polys.append(sum(c[:, m - 1] * h**m for m in range(1, k + 1)))
        H = sum(polys) / lengths[b]
        for t in range(lengths[b]):
            if mixer.formulation == "A":
                s = torch.sigmoid(W_s @ x[b, t] + b_s)
                out[b, t] = W_o @ (s * H) + b_o
            else:
                assert b_o is None
                s = F.hardsigmoid(W_s @ x[b, t] + b_s)
                out[b, t] = W_o @ (s * H)
    return out


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_output_shape_and_contract(formulation):
    mixer = make_mixer(formulation)
    x = torch.randn(3, 11, D_MODEL)
    result = mixer(x, x, x)
    assert isinstance(result, tuple) and len(result) == 2
    out, attn = result
    assert out.shape == x.shape
    assert attn is None
    out, attn = mixer(x, x, x, key_padding_mask=padding_mask([11, 5, 1], 11))
    assert out.shape == x.shape and attn is None


def test_invalid_arguments():
    with pytest.raises(ValueError):
        PoM(D_MODEL, formulation="B")
    with pytest.raises(ValueError):
        PoM(D_MODEL, degree=0)
    with pytest.raises(ValueError):
        PoM(D_MODEL, degree=-2, formulation="C")
    with pytest.raises(ValueError):
        PoM(D_MODEL, expand=0)


def test_old_tile_option_name_says_what_to_use():
    with pytest.raises(ValueError, match="tile_size=64"):
        PoM(D_MODEL, chunk_size=64)


def test_parameter_counts():
    d, e, k = D_MODEL, 2, 3
    a = PoM(d, degree=k, expand=e, formulation="A")
    width = k * e * d
    assert sum(p.numel() for p in a.parameters()) == 3 * width * d + 2 * width + d
    c = PoM(d, degree=k, expand=e, formulation="C")
    width = e * d
    assert (
        sum(p.numel() for p in c.parameters()) == 3 * width * d + 2 * width + k * width
    )
    # Formulation C starts near zero (coefficients initialised near 0).
    x = torch.randn(2, 10, d)
    assert c(x, x, x)[0].abs().max() < 0.1


# ------------------------------------------------------- reference values


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_matches_reference(formulation, fused):
    mixer = make_mixer(formulation, fused=fused, tile_size=4)
    lengths = [13, 7, 1]
    x = torch.randn(3, 13, D_MODEL)
    with torch.no_grad():
        out, _ = mixer(x, x, x, key_padding_mask=padding_mask(lengths, 13))
        expected = reference(mixer, x, lengths)
        out_full, _ = mixer(x, x, x)
        expected_full = reference(mixer, x)
    assert expected.abs().max() > 1e-2  # not a trivially-zero comparison
    for b, length in enumerate(lengths):
        torch.testing.assert_close(out[b, :length], expected[b, :length], **TOL)
    torch.testing.assert_close(out_full, expected_full, **TOL)


# ------------------------------------------------------------- invariances


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_padding_length_and_content_invariance(formulation):
    mixer = make_mixer(formulation, tile_size=4)
    lengths = [10, 6]
    x = torch.randn(2, 10, D_MODEL)
    out, _ = mixer(x, x, x, key_padding_mask=padding_mask(lengths, 10))

    # Longer padding filled with large garbage.
    longer = torch.randn(2, 25, D_MODEL) * 30
    for b, length in enumerate(lengths):
        longer[b, :length] = x[b, :length]
    out_longer, _ = mixer(
        longer, longer, longer, key_padding_mask=padding_mask(lengths, 25)
    )
    for b, length in enumerate(lengths):
        alone, _ = mixer(x[b : b + 1, :length], None, None)
        torch.testing.assert_close(out[b, :length], alone[0], **TOL)
        torch.testing.assert_close(out_longer[b, :length], alone[0], **TOL)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_non_finite_padding_is_ignored(formulation, fused, causal):
    mixer = make_mixer(formulation, fused=fused, tile_size=4).train()
    lengths = [9, 5]
    x = torch.randn(2, 9, D_MODEL)
    garbage = x.clone()
    garbage[1, 5] = float("nan")
    garbage[1, 7] = float("inf")
    garbage[1, 8] = -float("inf")
    garbage.requires_grad_()
    pad = padding_mask(lengths, 9)
    attn_mask = causal_bool_mask(9) if causal else None
    out, _ = mixer(garbage, None, None, attn_mask=attn_mask, key_padding_mask=pad)
    out[~pad].sum().backward()
    clean, _ = mixer(x, None, None, attn_mask=attn_mask, key_padding_mask=pad)
    torch.testing.assert_close(out[~pad], clean[~pad], **TOL)
    for name, parameter in mixer.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
    assert torch.isfinite(garbage.grad[~pad]).all()


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_permutation_equivariance(formulation):
    mixer = make_mixer(formulation, tile_size=5)
    x = torch.randn(2, 12, D_MODEL)
    permutation = torch.randperm(12)
    out, _ = mixer(x, x, x)
    shuffled = x[:, permutation]
    out_shuffled, _ = mixer(shuffled, shuffled, shuffled)
    torch.testing.assert_close(out_shuffled, out[:, permutation], **TOL)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_global_context(formulation):
    mixer = make_mixer(formulation)
    x = torch.randn(1, 8, D_MODEL)
    changed = x.clone()
    changed[0, 3] += 1.0
    out, _ = mixer(x, x, x)
    out_changed, _ = mixer(changed, changed, changed)
    other_frames = [t for t in range(8) if t != 3]
    difference = (out_changed - out)[0, other_frames].abs().amax(dim=-1)
    assert (difference > 1e-5).all()


# ------------------------------------------------------- fused vs naive


def fused_and_naive(formulation, degree):
    fused = make_mixer(formulation, degree=degree, fused=True, tile_size=3)
    naive = make_mixer(formulation, degree=degree, fused=False)
    naive.load_state_dict(fused.state_dict())
    return fused.double(), naive.double()


def value_and_grads(mixer, x, pad):
    x = x.clone().requires_grad_()
    out, _ = mixer(x, None, None, key_padding_mask=pad)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in mixer.named_parameters()}
    mixer.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_equals_naive(formulation, degree, masked):
    fused, naive = fused_and_naive(formulation, degree)
    frames = 11  # not divisible by tile_size=3: a partial last tile
    x = torch.randn(3, frames, D_MODEL, dtype=torch.float64)
    pad = padding_mask([11, 7, 2], frames) if masked else None
    out_f, gx_f, grads_f = value_and_grads(fused, x, pad)
    out_n, gx_n, grads_n = value_and_grads(naive, x, pad)
    tol = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(out_f, out_n, **tol)
    torch.testing.assert_close(gx_f, gx_n, **tol)
    assert set(grads_f) == set(grads_n)
    assert ("coefficients" in grads_f) == (formulation == "C")
    for name in grads_n:
        assert grads_n[name].abs().sum() > 0, name
        torch.testing.assert_close(grads_f[name], grads_n[name], **tol, msg=name)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("degree", [1, 2, 3, 4])
@pytest.mark.parametrize("per_frame", [False, True])
def test_polynomial_vjp_equals_autograd(formulation, degree, per_frame):
    """The hand-written backward of each expansion, against autograd."""
    batch, frames = 2, 7
    mixer = make_mixer(formulation, degree=degree).double()
    expansion, params = mixer.expansion()
    params = [p.detach().requires_grad_() for p in params]
    state_width = mixer.expand_proj.out_features
    # Projected values on both sides of every kink and bound of the activations.
    z = 4 * torch.randn(batch, frames, state_width, dtype=torch.float64)
    activations = expansion.activation(z).requires_grad_()
    weights = torch.rand(batch, frames, 1, dtype=torch.float64)
    grad = torch.randn(batch, frames if per_frame else 1, state_width).double()
    # The plain polynomial is the expansion's.
    torch.testing.assert_close(
        polynomial_of_activations(formulation, degree, activations, *params),
        expansion.expand(z, *params),
    )
    _, vjp_autograd = torch.autograd.functional.vjp(
        lambda a, *p: polynomial_of_activations(formulation, degree, a, *p),
        (activations, *params),
        weights * grad.expand(batch, frames, state_width),
    )
    grad_activations, grad_params = expansion.vjp(
        activations.detach(), weights, grad, *params
    )
    torch.testing.assert_close(grad_activations, vjp_autograd[0])
    assert len(grad_params) == len(params) == (formulation == "C")
    for mine, reference in zip(grad_params, vjp_autograd[1:], strict=True):
        torch.testing.assert_close(mine, reference)


def polynomial_of_activations(formulation, degree, activations, *params):
    """The polynomial from activated frames, written out plainly."""
    if formulation == "A":
        chunks = activations.chunk(degree, dim=-1)
        return torch.cat([math.prod(chunks[: m + 1]) for m in range(degree)], dim=-1)
    (coefficients,) = params
    return sum(coefficients[:, m] * activations ** (m + 1) for m in range(degree))


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_gradcheck(formulation, masked):
    mixer = make_mixer(formulation, degree=3, expand=1, fused=True, tile_size=2)
    mixer = mixer.double()
    names = [name for name, _ in mixer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in mixer.parameters())
    x = torch.randn(2, 5, D_MODEL, dtype=torch.float64, requires_grad=True)
    pad = padding_mask([5, 3], 5) if masked else None

    def run(x, *params):
        inputs = (x,)
        kwargs = {"key_padding_mask": pad}
        return functional_call(
            mixer, dict(zip(names, params, strict=True)), inputs, kwargs
        )[0]

    assert torch.autograd.gradcheck(run, (x, *params))


def test_fused_mean_tile_size_does_not_matter():
    x = torch.randn(2, 17, D_MODEL)
    pad = padding_mask([17, 9], 17)
    outs = []
    for tile_size in [1, 4, 17, 1024]:
        mixer = make_mixer("A", tile_size=tile_size)
        outs.append(mixer(x, x, x, key_padding_mask=pad)[0])
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], **TOL)


# --------------------------------------------------- causal/chunked masks


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("mask_kind", ["bool", "speechbrain"])
def test_causal_mask_equals_prefix(formulation, mask_kind):
    mixer = make_mixer(formulation)
    frames = 9
    x = torch.randn(2, frames, D_MODEL)
    if mask_kind == "bool":
        attn_mask = causal_bool_mask(frames)
    else:
        # SpeechBrain's causal mask is a float additive one: 0 / -inf.
        attn_mask = get_lookahead_mask(x)
        assert attn_mask.dtype.is_floating_point
        assert torch.equal(torch.isneginf(attn_mask), causal_bool_mask(frames))
        assert torch.equal(make_transformer_src_mask(x, causal=True), attn_mask)
    out, _ = mixer(x, x, x, attn_mask=attn_mask)
    for t in range(frames):
        prefix = x[:, : t + 1]
        expected, _ = mixer(prefix, prefix, prefix)
        torch.testing.assert_close(out[:, t], expected[:, t], **TOL)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_causal_mask_with_padding_equals_prefix(formulation):
    mixer = make_mixer(formulation)
    lengths = [9, 5]
    x = torch.randn(2, 9, D_MODEL)
    x[1, 5:] = 50.0
    out, _ = mixer(
        x,
        x,
        x,
        attn_mask=get_lookahead_mask(x),
        key_padding_mask=padding_mask(lengths, 9),
    )
    for b, length in enumerate(lengths):
        for t in range(length):
            prefix = x[b : b + 1, : t + 1]
            expected, _ = mixer(prefix, prefix, prefix)
            torch.testing.assert_close(out[b, t], expected[0, t], **TOL)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("left_chunks", [None, 0, 1])
def test_chunked_mask_equals_visible_context(formulation, left_chunks):
    mixer = make_mixer(formulation)
    chunk, frames = 3, 11  # the last chunk is partial
    lengths = [11, 8]
    x = torch.randn(2, frames, D_MODEL)
    x[1, 8:] = -40.0
    config = DynChunkTrainConfig(chunk_size=chunk, left_context_size=left_chunks)
    attn_mask = make_transformer_src_mask(x, dynchunktrain_config=config)
    assert attn_mask.dtype == torch.bool and attn_mask.shape == (frames, frames)
    out, _ = mixer(
        x, x, x, attn_mask=attn_mask, key_padding_mask=padding_mask(lengths, frames)
    )
    for b, length in enumerate(lengths):
        for t in range(length):
            c = t // chunk
            first = 0 if left_chunks is None else max(0, c - left_chunks) * chunk
            last = min((c + 1) * chunk, length)
            context = x[b : b + 1, first:last]
            expected, _ = mixer(context, None, None)
            torch.testing.assert_close(out[b, t], expected[0, t - first], **TOL)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_all_zero_mask_matches_no_mask(formulation):
    mixer = make_mixer(formulation)
    x = torch.randn(2, 7, D_MODEL)
    pad = padding_mask([7, 4], 7)
    for full in [torch.zeros(7, 7, dtype=torch.bool), torch.zeros(2, 7, 7)]:
        out_masked, _ = mixer(x, x, x, attn_mask=full, key_padding_mask=pad)
        out, _ = mixer(x, x, x, key_padding_mask=pad)
        torch.testing.assert_close(out_masked[~pad], out[~pad], **TOL)


# --------------------------------------------------------------- gradients


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_gradients_reach_every_parameter(formulation, causal, fused):
    torch.manual_seed(0)
    # Default initialisation (formulation C's coefficients near zero).
    mixer = PoM(D_MODEL, formulation=formulation, fused=fused, tile_size=4).train()
    x = torch.randn(2, 10, D_MODEL, requires_grad=True)
    pad = padding_mask([10, 6], 10)
    attn_mask = causal_bool_mask(10) if causal else None
    out, _ = mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=pad)
    out[~pad].pow(2).sum().backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
    assert x.grad[~pad].abs().sum() > 0
    # Padded frames have no influence, hence no gradient.
    assert torch.all(x.grad[pad] == 0)


def test_dropout_only_in_training():
    mixer = make_mixer(dropout=0.5)
    x = torch.randn(2, 10, D_MODEL)
    torch.testing.assert_close(mixer(x, x, x)[0], mixer(x, x, x)[0])
    mixer.train()
    assert not torch.equal(mixer(x, x, x)[0], mixer(x, x, x)[0])


# ---------------------------------------------------------------- autocast


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("mask", ["none", "causal tensor", "chunks"])
def test_bf16_autocast_state_in_float32(formulation, mask, monkeypatch):
    mixer = make_mixer(formulation, tile_size=8)
    x = torch.randn(2, 20, D_MODEL)
    pad = padding_mask([20, 9], 20)
    attn_mask = {
        "none": None,
        "causal tensor": causal_bool_mask(20),
        "chunks": DynChunkTrainConfig(chunk_size=3, left_context_size=2),
    }[mask]
    seen = []

    def spying(expand):
        def spy(z, *args, **kwargs):
            poly = expand(z, *args, **kwargs)
            seen.append((z.dtype, poly.dtype, torch.is_autocast_enabled("cpu")))
            return poly

        return spy

    for name in ("running_products", "power_series"):
        monkeypatch.setattr(pom_module, name, spying(getattr(pom_module, name)))
    states = []
    aggregate = mixer.aggregate

    def aggregate_spy(*args, **kwargs):
        states.append(aggregate(*args, **kwargs))
        return states[-1]

    monkeypatch.setattr(mixer, "aggregate", aggregate_spy)
    gate_dtypes = []
    mixer.gate_proj.register_forward_hook(
        lambda module, inputs, output: gate_dtypes.append(output.dtype)
    )
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out, attn = mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=pad)
    # The polynomial of every tile, and the state, are in float32.
    assert seen and set(seen) == {(torch.float32, torch.float32, False)}
    assert [state.dtype for state, _ in states] == [torch.float32]
    assert gate_dtypes == [torch.bfloat16]  # autocast really was active
    assert attn is None
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    expected, _ = mixer(x, x, x, attn_mask=attn_mask, key_padding_mask=pad)
    scale = expected[~pad].abs().max().item()
    torch.testing.assert_close(
        out[~pad].float(), expected[~pad], rtol=5e-2, atol=5e-2 * scale
    )


def test_bf16_autocast_backward_is_finite():
    mixer = make_mixer("A", degree=4, tile_size=8).train()
    x = (10 * torch.randn(2, 20, D_MODEL)).requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out, _ = mixer(x, x, x, key_padding_mask=padding_mask([20, 9], 20))
    out.float().sum().backward()
    for name, parameter in mixer.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


# ----------------------------------------------------------- linear memory


class ShapeRecorder(TorchDispatchMode):
    """Records (op name, shape) of every tensor produced by an aten op."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(value, torch.Tensor):
                self.outputs.append((str(func), tuple(value.shape)))
        return result


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("fused", [True, False])
def test_padding_path_has_no_frames_by_frames_tensor(formulation, fused):
    frames = 257
    mixer = make_mixer(formulation, fused=fused, tile_size=64).train()
    x = torch.randn(2, frames, D_MODEL, requires_grad=True)
    pad = padding_mask([frames, 100], frames)
    recorder = ShapeRecorder()
    with recorder:
        out, _ = mixer(x, x, x, key_padding_mask=pad)
        out.pow(2).sum().backward()
    ops = [op for op, _ in recorder.outputs]
    # Both passes were recorded (the backward runs on this thread on CPU).
    assert any("backward" in op for op in ops)
    assert x.grad is not None and mixer.expand_proj.weight.grad is not None
    big = [
        (op, shape)
        for op, shape in recorder.outputs
        if sum(size >= frames for size in shape) >= 2
    ]
    assert big == []
    largest = max(math.prod(shape) for _, shape in recorder.outputs)
    assert largest < frames * frames

    # Control: the recorder does see the (documented) quadratic masked path.
    control = ShapeRecorder()
    with control:
        mixer(x, x, x, attn_mask=causal_bool_mask(frames), key_padding_mask=pad)
    assert any(shape[-2:] == (frames, frames) for _, shape in control.outputs)


def test_fused_path_never_holds_the_whole_polynomial():
    """fused=True: no (batch, frames, width) polynomial in forward or backward."""
    frames, tile = 64, 8
    mixer = make_mixer("A", degree=3, fused=True, tile_size=tile).train()
    x = torch.randn(2, frames, D_MODEL, requires_grad=True)
    recorder = ShapeRecorder()
    with recorder:
        out, _ = mixer(x, x, x)
        out.sum().backward()
    # The activations (and their gradients) exist a tile at a time.
    activations = [shape for op, shape in recorder.outputs if "gelu" in op]
    gelu_ops = {op for op, _ in recorder.outputs if "gelu" in op}
    assert gelu_ops == {"aten.gelu.default", "aten.gelu_backward.default"}
    assert all(shape[1] <= tile for shape in activations)
    # Every whole-length tensor of the polynomial's width is the gate's.
    width = mixer.expand_proj.out_features
    whole = {
        op.split(".")[1]
        for op, shape in recorder.outputs
        if width in shape and frames in shape
    }
    assert "sigmoid_backward" in whole
    gate_ops = {"detach", "view", "sigmoid", "sigmoid_backward", "transpose", "bmm"}
    assert whole <= gate_ops


def saved_elements(mixer, x, pad):
    """Elements of every tensor that autograd keeps from one forward pass."""
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        mixer(x, x, x, key_padding_mask=pad)
    return sum(sizes)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("frames", [3, 8, 20])
@pytest.mark.parametrize("fold", [True, False])
def test_select_fold_equals_product(formulation, frames, fold, monkeypatch):
    """Folding the state into W_o or forming gate * state: the same outputs
    and gradients, whatever the shapes (each order forced on each shape)."""
    mixer = make_mixer(formulation).double()
    x = torch.randn(2, frames, D_MODEL, dtype=torch.float64)
    pad = padding_mask([frames, frames - 2], frames)
    expected = outputs_and_grads(mixer, x, None, pad)
    monkeypatch.setattr(pom_module, "folds_state", lambda time, d_model: fold)
    forced = outputs_and_grads(mixer, x, None, pad)
    torch.testing.assert_close(forced, expected, **EXACT)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("frames", [3, 8, 9, 20])
def test_select_keeps_the_smaller_tensor_for_backward(formulation, frames, monkeypatch):
    """The order chosen for the shapes keeps no more for backward than the
    other, and strictly less when the lengths differ from d_model."""
    mixer = make_mixer(formulation).train()
    x = torch.randn(2, frames, D_MODEL, requires_grad=True)
    pad = padding_mask([frames, frames - 2], frames)
    chosen = saved_elements(mixer, x, pad)
    held = {}
    for fold in (True, False):
        monkeypatch.setattr(pom_module, "folds_state", lambda t, d, fold=fold: fold)
        held[fold] = saved_elements(mixer, x, pad)
    assert chosen == min(held.values())
    width = mixer.gate_proj.out_features
    # The two orders differ by (time - d_model) * width per utterance.
    assert held[True] - held[False] == 2 * width * (D_MODEL - frames)


# ------------------------------------------- linear chunked path, streaming

CHUNK_SIZES = [1, 3, 8]
LEFT_CHUNKS = [None, 0, 2]
EXACT = {"rtol": 1e-10, "atol": 1e-12}


def chunk_mask(frames, config):
    """SpeechBrain's DCT mask, (frames, frames) bool: the quadratic reference."""
    return make_transformer_src_mask(
        torch.empty(1, frames), dynchunktrain_config=config
    )


def outputs_and_grads(mixer, x, attn_mask, pad):
    """Output and gradients (input, parameters) of a fixed projection of it."""
    x = x.clone().requires_grad_()
    out, _ = mixer(x, None, None, attn_mask=attn_mask, key_padding_mask=pad)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights)[~pad].sum().backward()
    grads = {name: p.grad.clone() for name, p in mixer.named_parameters()}
    mixer.zero_grad(set_to_none=True)
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("chunk", CHUNK_SIZES)
@pytest.mark.parametrize("left_chunks", LEFT_CHUNKS)
@pytest.mark.parametrize("fused", [True, False])
def test_chunked_config_equals_quadratic_mask(formulation, chunk, left_chunks, fused):
    """The linear path equals the (N x N) mask path: outputs and gradients."""
    mixer = make_mixer(formulation, fused=fused, tile_size=4).double()
    frames = 13  # a multiple of no chunk size but 1: a partial last chunk
    x = torch.randn(3, frames, D_MODEL, dtype=torch.float64)
    x[1, 9:] = 30.0  # padding content must not matter
    pad = padding_mask([13, 9, 2], frames)
    config = DynChunkTrainConfig(chunk_size=chunk, left_context_size=left_chunks)
    linear = outputs_and_grads(mixer, x, config, pad)
    quadratic = outputs_and_grads(mixer, x, chunk_mask(frames, config), pad)
    torch.testing.assert_close(linear[0][~pad], quadratic[0][~pad], **EXACT)
    torch.testing.assert_close(linear[1], quadratic[1], **EXACT)
    for name, grad in quadratic[2].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(linear[2][name], grad, **EXACT, msg=name)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_causal_config_equals_causal_mask(formulation):
    """``CAUSAL`` (chunks of 1 frame, whole past) is SpeechBrain's causal mask."""
    mixer = make_mixer(formulation).double()
    x = torch.randn(2, 10, D_MODEL, dtype=torch.float64)
    pad = padding_mask([10, 6], 10)
    linear = outputs_and_grads(mixer, x, CAUSAL, pad)
    quadratic = outputs_and_grads(mixer, x, get_lookahead_mask(x), pad)
    for got, expected in zip(linear[:2], quadratic[:2], strict=True):
        torch.testing.assert_close(got, expected, **EXACT)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_chunked_gradcheck(formulation):
    """Numerical gradients of the fused chunk sums' inputs (the custom backward)."""
    mixer = make_mixer(formulation, degree=2, expand=1, tile_size=3).double()
    names = ["expand_proj.weight", "expand_proj.bias"]
    names += ["coefficients"] if formulation == "C" else []
    parameters = dict(mixer.named_parameters())
    params = tuple(parameters[name].detach().clone().requires_grad_() for name in names)
    x = torch.randn(2, 7, D_MODEL, dtype=torch.float64, requires_grad=True)
    kwargs = {
        "attn_mask": DynChunkTrainConfig(chunk_size=2, left_context_size=1),
        "key_padding_mask": padding_mask([7, 4], 7),
    }

    def run(x, *params):
        named = dict(zip(names, params, strict=True))
        return functional_call(mixer, named, (x,), kwargs)[0]

    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("left_chunks", [None, 2])
def test_chunked_path_has_no_frames_by_frames_tensor(formulation, left_chunks):
    frames, tile = 257, 64
    mixer = make_mixer(formulation, tile_size=tile).train()
    x = torch.randn(2, frames, D_MODEL, requires_grad=True)
    pad = padding_mask([frames, 100], frames)
    config = DynChunkTrainConfig(chunk_size=4, left_context_size=left_chunks)
    recorder = ShapeRecorder()
    with recorder:
        out, _ = mixer(x, x, x, attn_mask=config, key_padding_mask=pad)
        out.pow(2).sum().backward()
    assert any("backward" in op for op, _ in recorder.outputs)
    assert x.grad is not None and mixer.expand_proj.weight.grad is not None
    big = [
        (op, shape)
        for op, shape in recorder.outputs
        if sum(size >= frames for size in shape) >= 2
    ]
    assert big == []
    assert max(math.prod(shape) for _, shape in recorder.outputs) < frames * frames
    # The polynomial is only ever computed one tile at a time.
    expansions = [s for op, s in recorder.outputs if "gelu" in op or "leaky" in op]
    assert expansions and all(shape[1] <= tile for shape in expansions)


def stream(mixer, x, chunk, left_chunks):
    """``forward_streaming`` over consecutive chunks of ``x``, concatenated."""
    context = mixer.make_streaming_context(left_chunks)
    pieces = [
        mixer.forward_streaming(x[:, start : start + chunk], context)
        for start in range(0, x.shape[1], chunk)
    ]
    return torch.cat(pieces, dim=1), context


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("left_chunks", LEFT_CHUNKS)
def test_streaming_equals_chunked_training(formulation, chunk, left_chunks):
    mixer = make_mixer(formulation)
    x = torch.randn(2, 11, D_MODEL)
    config = DynChunkTrainConfig(chunk_size=chunk, left_context_size=left_chunks)
    with torch.no_grad():
        expected, _ = mixer(x, x, x, attn_mask=config)
        streamed, _ = stream(mixer, x, chunk, left_chunks)
    torch.testing.assert_close(streamed, expected, **TOL)


def held_shapes(context):
    """Shapes of the tensors a ``StreamingMean`` holds."""
    if context.past is None:
        return [tuple(context.running_sum.shape)]
    return [tuple(chunk_sum.shape) for chunk_sum, _ in context.past]


@pytest.mark.parametrize("left_chunks", [None, 2])
def test_streaming_state_does_not_grow(left_chunks):
    mixer = make_mixer("A")
    x = torch.randn(1, 30, D_MODEL)
    with torch.no_grad():
        _, after_10 = stream(mixer, x[:, :10], 1, left_chunks)
        _, after_30 = stream(mixer, x, 1, left_chunks)
    assert held_shapes(after_10) == held_shapes(after_30)
    assert len(held_shapes(after_10)) == (1 if left_chunks is None else left_chunks)
    # The state alone (the mixer adds nothing to it), over 10,000 chunks.
    width = mixer.expand_proj.out_features
    for _ in range(10_000 - 30):
        after_30.update(torch.randn(1, width), frames=1)
    assert held_shapes(after_30) == held_shapes(after_10)
