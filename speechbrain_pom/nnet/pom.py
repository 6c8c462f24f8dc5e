"""The Polynomial Mixer (PoM): a linear-complexity token mixer that replaces
multi-head self-attention in SpeechBrain encoders.

Each frame is expanded into a polynomial, the expansions are averaged over
the utterance (one state vector, padding excluded) and every frame reads that
state back through a learned gate. Time and memory grow linearly with the
number of frames.

References
----------
* Feillet, Whetten, Picard, Allauzen, "Polynomial Mixing for Efficient
  Self-supervised Speech Encoders", arXiv 2603.00683, 2026.
* Picard et al., "PoM: Efficient Image and Video Generation with the
  Polynomial Mixer", arXiv 2411.12663.

Authors
* speechbrain-pom contributors 2026
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig
from speechbrain_pom.utils.dynamic_chunk_mean import (
    StreamingMean,
    chunk_window_mean,
    frames_allowed,
    weighted_group_sums,
)

FORMULATIONS = ("A", "C")


def running_products(activations, degree):
    """Formulation A's polynomial: running products of ``degree`` chunks.

    Without autograd (inference, the fused path's forward) the products
    overwrite ``activations`` in place: no copy of the polynomial is made.

    Arguments
    ---------
    activations : torch.Tensor
        Activated projections of the frames, shape (..., degree * width).
    degree : int
        Number of chunks, hence the highest monomial degree.

    Returns
    -------
    torch.Tensor
        The monomials of degree 1..degree side by side, shape (..., degree * width).

    Example
    -------
    >>> running_products(torch.rand(2, 5, 12), degree=3).shape
    torch.Size([2, 5, 12])
    """
    chunks = activations.chunk(degree, dim=-1)
    if not (torch.is_grad_enabled() and activations.requires_grad):
        for lower, chunk in zip(chunks, chunks[1:]):
            chunk.mul_(lower)
        return activations
    # Running products, not torch.cumprod: its backward (flips, cumulative
    # sums, a division and a check for zeros) costs more than the products.
    monomials = [chunks[0]]
    for chunk in chunks[1:]:
        monomials.append(monomials[-1] * chunk)
    return torch.cat(monomials, dim=-1)


def products_vjp(activations, weights, grad, degree):
    """Backward of ``running_products``, for weighted sums.

    The gradient reaching the polynomial of frame t is ``weights_t * grad_t``
    (a state's gradient, shared by its frames); it is never formed. With
    ``g_1..g_k`` the chunks, the gradient of ``g_j`` is
    ``weights * (g_1 ... g_{j-1}) * r_j``, where ``r_k = grad_k`` and
    ``r_j = grad_j + g_{j+1} r_{j+1}``.

    Arguments
    ---------
    activations : torch.Tensor
        Activated projections of the frames, (batch, time, degree * width).
    weights : torch.Tensor
        Weight of each frame, shape (batch, time, 1).
    grad : torch.Tensor
        Gradient of the weighted sums, (batch, 1 or time, degree * width).
    degree : int
        Number of chunks.

    Returns
    -------
    grad_activations : torch.Tensor
        Same shape as ``activations``.
    grad_params : tuple
        Empty: the products have no parameters.

    Example
    -------
    >>> g, weights = torch.rand(2, 5, 12), torch.rand(2, 5, 1)
    >>> products_vjp(g, weights, torch.rand(2, 1, 12), degree=3)[0].shape
    torch.Size([2, 5, 12])
    """
    chunks = activations.chunk(degree, dim=-1)
    grads = grad.chunk(degree, dim=-1)
    grad_activations = torch.empty_like(activations)
    slots = grad_activations.chunk(degree, dim=-1)
    suffix = grads[-1]
    for j in range(degree - 2, -1, -1):
        suffix = torch.addcmul(grads[j], chunks[j + 1], suffix, out=slots[j])
    prefix = weights
    for j in range(degree - 1):
        slots[j].mul_(prefix)
        prefix = prefix * chunks[j]
    torch.mul(prefix, grads[-1], out=slots[-1])
    return grad_activations, ()


def bounded_activation(z):
    """Formulation C's activation: a leaky ReLU clamped to [-0.1, 6].

    Arguments
    ---------
    z : torch.Tensor
        Projected frames.

    Returns
    -------
    torch.Tensor
        Same shape.

    Example
    -------
    >>> bounded_activation(torch.tensor([-100.0, -1.0, 2.0, 100.0]))
    tensor([-0.1000, -0.0100,  2.0000,  6.0000])
    """
    # The clamp bounds h^k, which keeps low-precision training stable.
    return torch.clamp(F.leaky_relu(z, 0.01), -0.1, 6.0)


def power_series(h, coefficients):
    """Formulation C's polynomial: a learned power series of the activations.

    Arguments
    ---------
    h : torch.Tensor
        Activated projections of the frames, shape (..., width).
    coefficients : torch.Tensor
        Coefficient of each power, shape (width, degree); column m-1 multiplies h^m.

    Returns
    -------
    torch.Tensor
        sum_m coefficients[:, m-1] * h^m, shape (..., width).

    Example
    -------
    >>> power_series(torch.rand(2, 5, 8), torch.rand(8, 3)).shape
    torch.Size([2, 5, 8])
    """
    # Horner's scheme: one running tensor instead of one per power.
    series = coefficients[:, -1]
    for m in range(coefficients.shape[1] - 2, -1, -1):
        series = coefficients[:, m] + h * series
    return h * series


def powers_vjp(h, weights, grad, coefficients):
    """Backward of ``power_series``, for weighted sums.

    As ``products_vjp``: the polynomial of frame t receives
    ``weights_t * grad_t``.

    Arguments
    ---------
    h : torch.Tensor
        Activated frames, shape (batch, time, width).
    weights : torch.Tensor
        Weight of each frame, shape (batch, time, 1).
    grad : torch.Tensor
        Gradient of the weighted sums, (batch, 1 or time, width).
    coefficients : torch.Tensor
        (width, degree), as in ``power_series``.

    Returns
    -------
    grad_h : torch.Tensor
        Same shape as ``h``.
    grad_params : tuple
        The gradient of ``coefficients``.

    Example
    -------
    >>> h, weights = torch.rand(2, 5, 8), torch.rand(2, 5, 1)
    >>> grad_h, (grad_c,) = powers_vjp(h, weights, torch.rand(2, 1, 8), torch.rand(8, 3))
    >>> grad_h.shape, grad_c.shape
    (torch.Size([2, 5, 8]), torch.Size([8, 3]))
    """
    degree = coefficients.shape[1]
    weighted = weights * grad
    # The derivative of the series, sum_m m c_m h^(m-1), by Horner's scheme.
    slope = degree * coefficients[:, -1]
    for m in range(degree - 1, 0, -1):
        slope = m * coefficients[:, m - 1] + h * slope
    power = h
    grad_coefficients = []
    for m in range(degree):
        if m:
            power = power * h
        grad_coefficients.append((weighted * power).sum(dim=(0, 1)))
    return weighted * slope, (torch.stack(grad_coefficients, dim=1),)


def project_and_expand(x, expansion, weight, bias, *params):
    """Projects frames, then expands them into their polynomial.

    The projection follows any autocast in force; the expansion runs in
    float32 (or wider), because products of k activations overflow low
    precision.

    Arguments
    ---------
    x : torch.Tensor
        Frames (batch, time, d_model).
    expansion : callable
        ``expansion(z, *params)``, e.g. ``Expansion.expand``.
    weight, bias : torch.Tensor
        The projection.
    *params : torch.Tensor
        The expansion's learned tensors.

    Returns
    -------
    torch.Tensor
        The polynomial (batch, time, width).

    Example
    -------
    >>> x, weight, bias = torch.rand(2, 5, 4), torch.rand(12, 4), torch.rand(12)
    >>> powers = Expansion(bounded_activation, power_series, powers_vjp)
    >>> project_and_expand(x, powers.expand, weight, bias, torch.rand(12, 3)).shape
    torch.Size([2, 5, 12])
    """
    z = F.linear(x, weight, bias)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return expansion(
            z.to(torch.promote_types(z.dtype, torch.float32)), *params
        )


def time_tiles(frames, group, tile_size):
    """Tiles of about ``tile_size`` frames that respect groups of ``group``.

    A tile either lies inside one group or is made of whole groups (the last
    one possibly partial), so that its group sums add to the whole's.

    Arguments
    ---------
    frames : int
        Length of the sequence.
    group : int
        Frames per group.
    tile_size : int
        Largest tile wanted (a tile holds at least one group when groups are
        smaller than this).

    Yields
    ------
    (start, stop) : tuple of int
        Frame range of each tile, in order.

    Example
    -------
    >>> list(time_tiles(10, group=3, tile_size=7))
    [(0, 6), (6, 10)]
    >>> list(time_tiles(10, group=6, tile_size=4))
    [(0, 4), (4, 6), (6, 10)]
    """
    step = group * (tile_size // group) if group <= tile_size else tile_size
    span = max(group, step)
    for group_start in range(0, frames, span):
        group_stop = min(group_start + span, frames)
        for start in range(group_start, group_stop, step):
            yield start, min(start + step, group_stop)


class Expansion(NamedTuple):
    """A formulation's polynomial, with what the fused path needs of it.

    ``activation(z)`` activates the projected frames, ``polynomial(
    activations, *params)`` (``running_products``, ``power_series``) maps
    them to the polynomial and ``vjp(activations, weights, grad, *params)``
    (``products_vjp``, ``powers_vjp``) is its backward, for weighted sums.
    """

    activation: Callable
    polynomial: Callable
    vjp: Callable

    def expand(self, z, *params):
        """The polynomial of projected frames ``z``."""
        return self.polynomial(self.activation(z), *params)


class _FusedGroupSums(torch.autograd.Function):
    """``weighted_group_sums`` of ``project_and_expand(x, ...)``, tile by tile.

    Neither the projected frames nor their polynomial are held whole or kept
    by autograd: only ``x`` (which the gate's projection keeps anyway), the
    weights and the parameters are saved. The backward pass recomputes each
    tile's activations, differentiates the polynomial by hand (its gradient,
    a state's gradient times each frame's weight, is never formed) and
    leaves the activation and the projection to autograd.
    """

    @staticmethod
    def forward(ctx, x, weights, group, tile_size, expansion, *params):
        device_type = x.device.type
        # The recomputation in backward must see the same autocast as here.
        ctx.autocast = {
            "device_type": device_type,
            "dtype": torch.get_autocast_dtype(device_type),
            "enabled": torch.is_autocast_enabled(device_type),
        }
        sums = None
        for start, stop in time_tiles(x.shape[1], group, tile_size):
            poly = project_and_expand(
                x[:, start:stop], expansion.expand, *params
            )
            tile_sums = weighted_group_sums(weights[:, start:stop], poly, group)
            if sums is None:
                groups = -(-x.shape[1] // group)
                sums = poly.new_zeros(x.shape[0], groups, poly.shape[-1])
            first = start // group
            sums[:, first : first + tile_sums.shape[1]] += tile_sums
        ctx.save_for_backward(x, weights, *params)
        ctx.group = group
        ctx.tile_size = tile_size
        ctx.expansion = expansion
        return sums

    @staticmethod
    def backward(ctx, grad_sums):
        x, weights, weight, bias, *params = ctx.saved_tensors
        # Autograd drops the gradients of inputs that do not need them.
        weight, bias = (p.detach().requires_grad_() for p in (weight, bias))
        grad_x = torch.empty_like(x)
        grad_params = [torch.zeros_like(p) for p in (weight, bias, *params)]
        for start, stop in time_tiles(x.shape[1], ctx.group, ctx.tile_size):
            x_tile = x[:, start:stop].detach().requires_grad_()
            with torch.enable_grad(), torch.autocast(**ctx.autocast):
                activations = project_and_expand(
                    x_tile, ctx.expansion.activation, weight, bias
                )
            first = start // ctx.group
            if (stop - 1) // ctx.group == first:
                # The tile lies in one group (always, offline): its
                # gradient broadcasts over the tile.
                grad_frames = grad_sums[:, first, None]
            else:
                group_of_frame = (
                    torch.arange(start, stop, device=x.device) // ctx.group
                )
                grad_frames = grad_sums.index_select(1, group_of_frame)
            grad_activations, grads = ctx.expansion.vjp(
                activations.detach(),
                weights[:, start:stop, None],
                grad_frames,
                *params,
            )
            grad_tile, *projection_grads = torch.autograd.grad(
                activations, [x_tile, weight, bias], grad_activations
            )
            grad_x[:, start:stop] = grad_tile
            for total, grad in zip(grad_params, [*projection_grads, *grads]):
                total += grad
        return (grad_x, None, None, None, None, *grad_params)


def frame_weights(key_padding_mask, batch, length, dtype, device):
    """Weights of the masked mean: 1 / (number of real frames), 0 on padding.

    Arguments
    ---------
    key_padding_mask : torch.Tensor or None
        (batch, length) boolean, True on padding (SpeechBrain's convention).
    batch, length : int
        Shape of the sequence, used when there is no mask.
    dtype : torch.dtype
        Dtype of the weights.
    device : torch.device
        Device of the weights.

    Returns
    -------
    torch.Tensor
        Shape (batch, length); each row sums to 1 (0 for an all-padding row).

    Example
    -------
    >>> mask = torch.tensor([[False, False, True]])
    >>> frame_weights(mask, 1, 3, torch.float32, "cpu")
    tensor([[0.5000, 0.5000, 0.0000]])
    """
    if key_padding_mask is None:
        return torch.full(
            (batch, length), 1.0 / length, dtype=dtype, device=device
        )
    real = (~key_padding_mask).to(dtype)
    return real / real.sum(dim=1, keepdim=True).clamp(min=1.0)


def folds_state(time, d_model):
    """Whether ``PoM.select`` folds the utterance's state into ``W_o``.

    Both orders keep the (batch, time, width) gate for backward; besides it,
    folding keeps the state times ``W_o``, (batch, width, d_model), and the
    plain product keeps gate * state, (batch, time, width). Folding holds
    fewer elements exactly when the utterance is longer than ``d_model``.

    Arguments
    ---------
    time : int
        Frames of the utterance.
    d_model : int
        Width of the mixer's output.

    Returns
    -------
    bool
        True to fold, False to form the product.

    Example
    -------
    >>> folds_state(time=1000, d_model=576), folds_state(time=250, d_model=576)
    (True, False)
    """
    return time > d_model


class PoM(nn.Module):
    """The Polynomial Mixer, a drop-in replacement for self-attention.

    Formulation A (default): the frame is projected to ``degree`` chunks of
    width ``expand * d_model``; after a GELU their cumulative products are the
    monomials of degree 1..degree. Formulation C: one projection of width
    ``expand * d_model`` goes through a bounded activation and a learned power
    series. In both, the polynomial is averaged over the real frames of the
    utterance (the state) and each frame reads the state through a gate:
    ``y_t = W_o (gate(x_t) * state)``. The mixer is "aggregate, then select":
    ``aggregate`` computes the states (one per utterance, per chunk or per
    frame), ``select`` reads them back.

    Cost with padding only (``attn_mask=None``) and with chunked or causal
    training (``attn_mask`` a ``DynChunkTrainConfig``, see ``dynamic_chunk_mean``):
    O(N * state width) time and memory, no N x N tensor; the polynomial's sums
    are accumulated tile by tile (``fused=True``) so that neither the forward
    nor the backward pass holds the whole polynomial. With a tensor
    ``attn_mask`` (any mask) every frame gets its own mean over the frames it
    may see, as an (N x N) by (N x width) product: O(N^2 * width) time and
    O(N^2) memory, correct but no longer linear (the reference for the others).
    ``forward_streaming`` processes one chunk at a time in constant memory.

    Under bf16/fp16 autocast the polynomial and its mean are computed in
    float32: products of ``degree`` activations overflow low precision.

    Arguments
    ---------
    d_model : int
        Dimension of the input and output frames.
    degree : int
        Highest degree k of the polynomial.
    expand : float
        Expansion factor e (the paper's D): each polynomial chunk has width
        ``round(expand * d_model)``; fractions allow matching a parameter budget.
    formulation : str
        "A" (parameters grow with the degree) or "C" (power series of one
        projection, parameters independent of the degree, output near 0 at
        initialisation).
    dropout : float
        Dropout applied to the output.
    fused : bool
        Accumulate the sums tile by tile, recompute each tile's projection in
        the backward pass and differentiate the polynomial by hand (less
        memory). False materialises the polynomial and leaves its backward to
        autograd (the plain path: faster on CPU, about 1.5x the memory).
    tile_size : int
        Number of frames per tile of the fused path (a memory knob with no
        effect on the result; unrelated to Dynamic Chunk Training's chunks).
    chunk_size : None
        Former name of ``tile_size``; giving it raises an error that says so.

    Example
    -------
    >>> x = torch.rand(2, 50, 144)
    >>> mixer = PoM(144, degree=3, expand=2)
    >>> padding = torch.arange(50)[None, :] >= torch.tensor([[50], [30]])
    >>> out, attn = mixer(x, x, x, key_padding_mask=padding)
    >>> out.shape, attn
    (torch.Size([2, 50, 144]), None)
    >>> chunks = DynChunkTrainConfig(chunk_size=8, left_context_size=2)
    >>> mixer(x, x, x, attn_mask=chunks, key_padding_mask=padding)[0].shape
    torch.Size([2, 50, 144])
    """

    def __init__(
        self,
        d_model,
        degree=3,
        expand=2,
        formulation="A",
        dropout=0.0,
        fused=True,
        tile_size=1024,
        chunk_size=None,
    ):
        super().__init__()
        if chunk_size is not None:
            raise ValueError(
                "PoM's `chunk_size` (frames per tile of the fused mean) is now "
                f"called `tile_size`: use tile_size={chunk_size}. Streaming "
                "chunks are set by a DynChunkTrainConfig, not by the mixer."
            )
        if formulation not in FORMULATIONS:
            raise ValueError(
                f"PoM formulation must be one of {FORMULATIONS}, got {formulation!r}"
            )
        if degree < 1 or expand < 1:
            raise ValueError(
                f"PoM needs degree >= 1 and expand >= 1, got {degree}, {expand}"
            )
        self.degree = degree
        self.formulation = formulation
        self.fused = fused
        self.tile_size = tile_size
        width = round(expand * d_model)
        state_width = degree * width if formulation == "A" else width
        self.expand_proj = nn.Linear(d_model, state_width)
        self.gate_proj = nn.Linear(d_model, state_width)
        self.out_proj = nn.Linear(state_width, d_model, bias=formulation == "A")
        if formulation == "C":
            # Near-zero coefficients make the mixer start close to the identity
            # of the residual branch.
            self.coefficients = nn.Parameter(0.01 * torch.randn(width, degree))
        self.dropout = nn.Dropout(dropout)

    def expansion(self):
        """The polynomial expansion of this formulation and its parameters.

        Returns
        -------
        expansion : Expansion
            The polynomial and its backward.
        params : tuple
            The learned tensors the expansion takes.
        """
        if self.formulation == "A":
            products = Expansion(
                F.gelu,
                functools.partial(running_products, degree=self.degree),
                functools.partial(products_vjp, degree=self.degree),
            )
            return products, ()
        powers = Expansion(bounded_activation, power_series, powers_vjp)
        return powers, (self.coefficients,)

    def polynomial(self, x):
        """Materialises the polynomial of the frames (the plain path).

        Arguments
        ---------
        x : torch.Tensor
            Frames (batch, time, d_model).

        Returns
        -------
        torch.Tensor
            (batch, time, width).

        Example
        -------
        >>> PoM(16, degree=3, expand=1).polynomial(torch.rand(2, 10, 16)).shape
        torch.Size([2, 10, 48])
        """
        expansion, params = self.expansion()
        projection = self.expand_proj
        return project_and_expand(
            x, expansion.expand, projection.weight, projection.bias, *params
        )

    def group_sums(self, x, weights, group):
        """Weighted sums of the polynomial of ``x`` over groups of frames.

        Arguments
        ---------
        x : torch.Tensor
            Frames (batch, time, d_model).
        weights : torch.Tensor
            (batch, time) weight of each frame.
        group : int
            Frames per group (the last group may be shorter).

        Returns
        -------
        torch.Tensor
            (batch, ceil(time / group), width), float32 or wider.

        Example
        -------
        >>> mixer = PoM(16, degree=2, expand=1)
        >>> x, weights = torch.rand(2, 10, 16), torch.ones(2, 10)
        >>> mixer.group_sums(x, weights, group=4).shape
        torch.Size([2, 3, 32])
        """
        if not self.fused:
            return weighted_group_sums(weights, self.polynomial(x), group)
        expansion, params = self.expansion()
        projection = self.expand_proj
        return _FusedGroupSums.apply(
            x,
            weights,
            group,
            self.tile_size,
            expansion,
            projection.weight,
            projection.bias,
            *params,
        )

    def aggregate(self, x, key_padding_mask=None, attn_mask=None):
        """The states: masked means over time of the polynomial of ``x``.

        Arguments
        ---------
        x : torch.Tensor
            Frames (batch, time, d_model).
        key_padding_mask : torch.Tensor, optional
            (batch, time) boolean, True on padding.
        attn_mask : torch.Tensor or DynChunkTrainConfig, optional
            A config: frames see their chunk and its left context (linear
            cost). A tensor, (time, time) or (batch, time, time), by
            SpeechBrain's convention (see ``dynamic_chunk_mean.frames_allowed``):
            bool True, or float -inf (additive), marks a frame that the query
            frame may not see (quadratic cost).

        Returns
        -------
        states : torch.Tensor
            (batch, groups, width), in float32 or wider: one state for the
            utterance, per chunk, or per frame (tensor mask).
        frames_per_state : int
            Consecutive frames that share a state (the last state may serve
            fewer).

        Example
        -------
        >>> mixer = PoM(16, degree=2, expand=1)
        >>> x = torch.rand(2, 10, 16)
        >>> states, frames_per_state = mixer.aggregate(x)
        >>> states.shape, frames_per_state
        (torch.Size([2, 1, 32]), 10)
        >>> chunks = DynChunkTrainConfig(chunk_size=4, left_context_size=None)
        >>> states, frames_per_state = mixer.aggregate(x, attn_mask=chunks)
        >>> states.shape, frames_per_state
        (torch.Size([2, 3, 32]), 4)
        """
        batch, length, _ = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        weights = frame_weights(
            key_padding_mask, batch, length, dtype, x.device
        )
        if isinstance(attn_mask, DynChunkTrainConfig):
            real = (weights > 0).to(dtype)
            sums = self.group_sums(x, real, attn_mask.chunk_size)
            states = chunk_window_mean(sums, real, attn_mask)
            return states, attn_mask.chunk_size
        if attn_mask is not None:
            real = (weights > 0).to(dtype)[:, None, :]
            visible = frames_allowed(attn_mask).to(dtype) * real
            visible = visible / visible.sum(dim=-1, keepdim=True).clamp(min=1.0)
            polynomial = self.polynomial(x)
            with torch.autocast(device_type=x.device.type, enabled=False):
                return torch.matmul(visible.to(polynomial.dtype), polynomial), 1
        return self.group_sums(x, weights, length), length

    def select(self, x, states, frames_per_state):
        """Each frame reads its state through its gate: ``W_o (gate * state)``.

        With one state per utterance the product is computed in whichever
        order holds fewer elements for backward (``folds_state``); both give
        the same result up to float rounding.

        Arguments
        ---------
        x : torch.Tensor
            Frames (batch, time, d_model).
        states : torch.Tensor
            (batch, groups, width), as returned by ``aggregate``.
        frames_per_state : int
            Consecutive frames that share a state.

        Returns
        -------
        torch.Tensor
            (batch, time, d_model).

        Example
        -------
        >>> mixer = PoM(16, degree=2, expand=1)
        >>> x = torch.rand(2, 10, 16)
        >>> mixer.select(x, *mixer.aggregate(x)).shape
        torch.Size([2, 10, 16])
        """
        length = x.shape[1]
        groups = states.shape[1]
        if groups == 1 and folds_state(length, self.out_proj.out_features):
            # W_o (gate * state) = gate @ (state[:, None] * W_o^T): the state
            # folded into W_o, a (batch, width, d_model) tensor, instead of
            # the (batch, time, width) product.
            gate = self.gate(x)
            readout = states[:, 0, :, None] * self.out_proj.weight.t()
            output = torch.bmm(gate, readout.to(gate.dtype))
            if self.out_proj.bias is not None:
                output = output + self.out_proj.bias
            return output
        padded_length = groups * frames_per_state
        if padded_length > length:
            # Pad the input (not the wider gate) to whole groups, so that a
            # state broadcasts over its frames without being copied to each.
            x = F.pad(x, (0, 0, 0, padded_length - length))
        gate = self.gate(x).unflatten(1, (groups, frames_per_state))
        mixed = (gate * states[:, :, None].to(gate.dtype)).flatten(1, 2)
        return self.out_proj(mixed)[:, :length]

    def gate(self, x):
        """The per-frame selection gate.

        Arguments
        ---------
        x : torch.Tensor
            Frames (batch, time, d_model).

        Returns
        -------
        torch.Tensor
            (batch, time, width), in (0, 1).

        Example
        -------
        >>> PoM(16, degree=2, expand=1).gate(torch.rand(2, 10, 16)).shape
        torch.Size([2, 10, 32])
        """
        logits = self.gate_proj(x)
        if self.formulation == "A":
            return torch.sigmoid(logits)
        return F.hardsigmoid(logits)

    def forward(
        self,
        query,
        key=None,
        value=None,
        attn_mask: torch.Tensor | DynChunkTrainConfig | None = None,
        key_padding_mask: torch.Tensor | None = None,
        pos_embs: torch.Tensor | None = None,
        return_attn_weights: bool = True,
    ):
        """Mixes the frames of ``query``, with SpeechBrain's attention signature.

        Arguments
        ---------
        query : torch.Tensor
            (batch, time, d_model) frames to mix.
        key, value : torch.Tensor, optional
            Unused: PoM mixes a sequence with itself (SpeechBrain passes x, x, x).
        attn_mask : torch.Tensor or DynChunkTrainConfig, optional
            A ``DynChunkTrainConfig`` (``dynamic_chunk_mean.CAUSAL`` for a causal
            mask): each frame sees its chunk and the config's left context;
            linear cost. A (time, time) or (batch, time, time) tensor, bool
            True or float -inf where a frame may not see another (see
            ``dynamic_chunk_mean.frames_allowed``): any mask, quadratic cost.
        key_padding_mask : torch.Tensor, optional
            (batch, time) boolean, True on padding.
        pos_embs : torch.Tensor, optional
            Unused: order comes from the Conformer's convolution module.
        return_attn_weights : bool
            Unused; there are no attention weights.

        Returns
        -------
        output : torch.Tensor
            (batch, time, d_model).
        None
            In place of attention weights.
        """
        if key_padding_mask is not None:
            # masked_fill, not a multiply by the weights: non-finite padding
            # would otherwise reach the real frames (0 * nan = nan), in the
            # state and in the gradients of the projections.
            query = query.masked_fill(key_padding_mask[..., None], 0.0)
        states, frames_per_state = self.aggregate(
            query, key_padding_mask, attn_mask
        )
        return self.dropout(self.select(query, states, frames_per_state)), None

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
            (batch, frames, d_model): the next chunk (``chunk_size`` frames,
            fewer only for the last chunk), no padding.
        context : StreamingMean
            From ``make_streaming_context``; updated in place.

        Returns
        -------
        torch.Tensor
            (batch, frames, d_model).

        Example
        -------
        >>> mixer = PoM(16).eval()
        >>> context = mixer.make_streaming_context(left_chunks=None)
        >>> mixer.forward_streaming(torch.rand(2, 4, 16), context).shape
        torch.Size([2, 4, 16])
        """
        frames = x.shape[1]
        weights = x.new_ones(x.shape[0], frames)
        chunk_sum = self.group_sums(x, weights, frames)[:, 0]
        state = context.update(chunk_sum, frames)
        return self.dropout(self.select(x, state[:, None], frames))
