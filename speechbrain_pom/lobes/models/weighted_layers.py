"""A learned weighted sum of an encoder's layers, as SpeechBrain's MP3S
benchmark reads a self-supervised model (the top layer of a BEST-RQ encoder
is trained to predict random codes, so it undersells what lower layers hold).

Authors
* speechbrain-pom contributors 2026
"""

import torch
import torch.nn.functional as F


def output_hidden_states(wrapper):
    """Makes an encoder return ``(output, hidden_states)``: the input of its
    first layer and the output of every layer, as SpeechBrain's
    ``TransformerASR`` does with ``output_hidden_states``.

    Arguments
    ---------
    wrapper : speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper
        The encoder; changed in place (its weights are not).

    Returns
    -------
    int
        The number of hidden states: layers + 1.
    """
    transformer = wrapper.transformer
    transformer.output_hidden_states = True
    transformer.encoder.output_hidden_states = True
    return len(transformer.encoder.layers) + 1


class WeightedLayerSum(torch.nn.Module):
    """A learned softmax-weighted sum of an encoder's hidden states, as
    SpeechBrain's ``WeightedSSLModel`` (the MP3S benchmark) reads an SSL
    model: the weights start equal (zeros before the softmax).

    Arguments
    ---------
    num_layers : int
        The number of hidden states summed (layers + 1).

    Example
    -------
    >>> layer_sum = WeightedLayerSum(3)
    >>> hidden = [torch.full((2, 5, 4), float(value)) for value in (0, 3, 6)]
    >>> layer_sum(hidden)[0, 0, 0].item()
    3.0
    """

    def __init__(self, num_layers):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden_states):
        """The weighted sum.

        Arguments
        ---------
        hidden_states : list of torch.Tensor
            ``num_layers`` tensors of the same shape.

        Returns
        -------
        torch.Tensor
            The sum, of that shape.
        """
        if len(hidden_states) != len(self.weights):
            raise ValueError(
                f"{len(hidden_states)} hidden states for {len(self.weights)} "
                "layer weights"
            )
        weights = F.softmax(self.weights, dim=-1)
        return sum(w * h for w, h in zip(weights, hidden_states, strict=True))
