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

import functools

import torch
import torch.nn.functional as F
from torch import nn

FORMULATIONS = ("A", "C")


def expand_products(z, degree):
    """Formulation A: cumulative products of ``degree`` GELU-activated chunks.

    Arguments
    ---------
    z : torch.Tensor
        Projected frames, shape (..., degree * width).
    degree : int
        Number of chunks, hence the highest monomial degree.

    Returns
    -------
    torch.Tensor
        The monomials of degree 1..degree side by side, shape (..., degree * width).

    Example
    -------
    >>> expand_products(torch.rand(2, 5, 12), degree=3).shape
    torch.Size([2, 5, 12])
    """
    chunks = F.gelu(z).unflatten(-1, (degree, -1))
    return torch.cumprod(chunks, dim=-2).flatten(-2)


def expand_powers(z, coefficients):
    """Formulation C: a learned power series of one bounded activation.

    Arguments
    ---------
    z : torch.Tensor
        Projected frames, shape (..., width).
    coefficients : torch.Tensor
        Coefficient of each power, shape (width, degree); column m-1 multiplies h^m.

    Returns
    -------
    torch.Tensor
        sum_m coefficients[:, m-1] * h^m, shape (..., width).

    Example
    -------
    >>> expand_powers(torch.rand(2, 5, 8), torch.rand(8, 3)).shape
    torch.Size([2, 5, 8])
    """
    # The clamp bounds h^k, which keeps low-precision training stable.
    h = torch.clamp(F.leaky_relu(z, 0.01), -0.1, 6.0)
    # Horner's scheme: one running tensor instead of one per power.
    series = coefficients[:, -1]
    for m in range(coefficients.shape[1] - 2, -1, -1):
        series = coefficients[:, m] + h * series
    return h * series


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
        ``expansion(z, *params)``, e.g. ``expand_powers``.
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
    >>> project_and_expand(x, expand_powers, weight, bias, torch.rand(12, 3)).shape
    torch.Size([2, 5, 12])
    """
    z = F.linear(x, weight, bias)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return expansion(z.to(torch.promote_types(z.dtype, torch.float32)), *params)


def weighted_mean(weights, polynomial):
    """``weights @ polynomial`` over time, in the polynomial's precision.

    Arguments
    ---------
    weights : torch.Tensor
        (batch, time) frame weights, or (batch, time, time) per query frame.
    polynomial : torch.Tensor
        (batch, time, width).

    Returns
    -------
    torch.Tensor
        (batch, width), or (batch, time, width) with per-frame weights.
    """
    with torch.autocast(device_type=polynomial.device.type, enabled=False):
        weights = weights.to(polynomial.dtype)
        if weights.dim() == 2:
            return torch.bmm(weights[:, None, :], polynomial).squeeze(1)
        return torch.matmul(weights, polynomial)


class _FusedPolynomialMean(torch.autograd.Function):
    """``weighted_mean`` of ``project_and_expand(x, ...)``, chunk by chunk in time.

    Neither the projected frames nor their polynomial are held whole or kept
    by autograd: only ``x`` (which the gate's projection keeps anyway) and the
    parameters are saved, and the backward pass recomputes each chunk and
    differentiates it right away.
    """

    @staticmethod
    def forward(ctx, x, weights, chunk_size, expansion, *params):
        device_type = x.device.type
        # The recomputation in backward must see the same autocast as here.
        ctx.autocast = {
            "device_type": device_type,
            "dtype": torch.get_autocast_dtype(device_type),
            "enabled": torch.is_autocast_enabled(device_type),
        }
        state = 0
        for start in range(0, x.shape[1], chunk_size):
            stop = start + chunk_size
            poly = project_and_expand(x[:, start:stop], expansion, *params)
            state = state + weighted_mean(weights[:, start:stop], poly)
        ctx.save_for_backward(x, weights, *params)
        ctx.chunk_size = chunk_size
        ctx.expansion = expansion
        return state

    @staticmethod
    def backward(ctx, grad_state):
        x, weights, *params = ctx.saved_tensors
        # Autograd drops the gradients of inputs that do not need them.
        params = [p.detach().requires_grad_() for p in params]
        grad_x = torch.empty_like(x)
        grad_params = [torch.zeros_like(p) for p in params]
        for start in range(0, x.shape[1], ctx.chunk_size):
            stop = start + ctx.chunk_size
            x_chunk = x[:, start:stop].detach().requires_grad_()
            with torch.enable_grad(), torch.autocast(**ctx.autocast):
                poly = project_and_expand(x_chunk, ctx.expansion, *params)
            # d(sum_t w_t P_t) / dP_t = w_t * grad_state
            grad_poly = weights[:, start:stop, None] * grad_state[:, None, :]
            grad_chunk, *grads = torch.autograd.grad(
                poly, [x_chunk, *params], grad_poly.to(poly.dtype)
            )
            grad_x[:, start:stop] = grad_chunk
            for total, grad in zip(grad_params, grads, strict=True):
                total += grad
        return (grad_x, None, None, None, *grad_params)


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
        return torch.full((batch, length), 1.0 / length, dtype=dtype, device=device)
    real = (~key_padding_mask).to(dtype)
    return real / real.sum(dim=1, keepdim=True).clamp(min=1.0)


class PoM(nn.Module):
    """The Polynomial Mixer, a drop-in replacement for self-attention.

    Formulation A (default): the frame is projected to ``degree`` chunks of
    width ``expand * d_model``; after a GELU their cumulative products are the
    monomials of degree 1..degree. Formulation C: one projection of width
    ``expand * d_model`` goes through a bounded activation and a learned power
    series. In both, the polynomial is averaged over the real frames of the
    utterance (the state) and each frame reads the state through a gate:
    ``y_t = W_o (gate(x_t) * state)``.

    Cost with padding only (``attn_mask=None``): O(N * state width) time and
    memory, no N x N tensor; the mean is accumulated chunk by chunk
    (``fused=True``) so that neither the forward nor the backward pass holds
    the whole polynomial. With an ``attn_mask`` (causal or chunked streaming
    training) every frame gets its own mean over the frames it may see: this
    is computed as an (N x N) by (N x width) product, O(N^2 * width) time and
    O(N^2) memory, correct but no longer linear.

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
        Accumulate the mean chunk by chunk and recompute the projection and the
        polynomial in the backward pass (less memory). False materialises them
        (the plain path).
    chunk_size : int
        Number of frames per chunk of the fused path.

    Example
    -------
    >>> x = torch.rand(2, 50, 144)
    >>> mixer = PoM(144, degree=3, expand=2)
    >>> padding = torch.arange(50)[None, :] >= torch.tensor([[50], [30]])
    >>> out, attn = mixer(x, x, x, key_padding_mask=padding)
    >>> out.shape, attn
    (torch.Size([2, 50, 144]), None)
    """

    def __init__(
        self,
        d_model,
        degree=3,
        expand=2,
        formulation="A",
        dropout=0.0,
        fused=True,
        chunk_size=1024,
    ):
        super().__init__()
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
        self.chunk_size = chunk_size
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
        expansion : callable
            ``expansion(z, *params)`` maps projected frames to their polynomial.
        params : tuple
            The learned tensors the expansion takes.
        """
        if self.formulation == "A":
            return functools.partial(expand_products, degree=self.degree), ()
        return expand_powers, (self.coefficients,)

    def polynomial(self, x):
        """Materialises the polynomial of the frames ``x`` (plain path)."""
        expansion, params = self.expansion()
        projection = self.expand_proj
        return project_and_expand(
            x, expansion, projection.weight, projection.bias, *params
        )

    def aggregate(self, x, key_padding_mask=None, attn_mask=None):
        """The state: masked mean over time of the polynomial of the frames ``x``.

        Arguments
        ---------
        x : torch.Tensor
            Frames (batch, time, d_model).
        key_padding_mask : torch.Tensor, optional
            (batch, time) boolean, True on padding.
        attn_mask : torch.Tensor, optional
            (time, time) or (batch, time, time); boolean True, or a float other
            than 0, marks a frame that the query frame may not see.

        Returns
        -------
        torch.Tensor
            (batch, width) without attn_mask, (batch, time, width) with it, in
            float32 or wider.
        """
        batch, length, _ = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        weights = frame_weights(key_padding_mask, batch, length, dtype, x.device)
        if attn_mask is not None:
            allowed = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask == 0
            visible = allowed.to(dtype) * (weights > 0).to(dtype)[:, None, :]
            visible = visible / visible.sum(dim=-1, keepdim=True).clamp(min=1.0)
            return weighted_mean(visible, self.polynomial(x))
        if not self.fused:
            return weighted_mean(weights, self.polynomial(x))
        expansion, params = self.expansion()
        projection = self.expand_proj
        return _FusedPolynomialMean.apply(
            x,
            weights,
            self.chunk_size,
            expansion,
            projection.weight,
            projection.bias,
            *params,
        )

    def forward(
        self,
        query,
        key=None,
        value=None,
        attn_mask: torch.Tensor | None = None,
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
        attn_mask : torch.Tensor, optional
            (time, time) or (batch, time, time) mask, True where a frame may
            not see another (causal or chunked training). Quadratic cost.
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
        state = self.aggregate(query, key_padding_mask, attn_mask)
        gate_logits = self.gate_proj(query)
        gate = (
            torch.sigmoid(gate_logits)
            if self.formulation == "A"
            else F.hardsigmoid(gate_logits)
        )
        if state.dim() == 3:
            output = self.out_proj(gate * state.to(gate.dtype))
        else:
            # W_o (gate * state) = gate @ (state[:, None] * W_o^T): folding the
            # state into W_o once per utterance avoids a (batch, time, width)
            # product tensor.
            readout = state[:, :, None] * self.out_proj.weight.t()
            output = torch.bmm(gate, readout.to(gate.dtype))
            if self.out_proj.bias is not None:
                output = output + self.out_proj.bias
        return self.dropout(output), None
