"""Input normalisation whose statistics never learn from a non-finite batch.

SpeechBrain's ``InputNormalization`` updates its running statistics with
every training batch; one batch with an inf or nan feature (audio that
decodes to nan, features that overflow) makes them nan for good, and they are
saved, exported and used for every later utterance. SpeechBrain already
skips the optimiser step of a batch whose loss is not finite (all ranks
alike under DDP, where the nan gradients are shared); this keeps the
statistics out of it too.

Authors
* speechbrain-pom contributors 2026
"""

import torch
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)


def normalize_finite(normalize, feats, lengths, ids=None, **kwargs):
    """Normalises ``feats``; a batch with non-finite features leaves the
    statistics unchanged, with a warning that names its utterances.

    Arguments
    ---------
    normalize : speechbrain.processing.features.InputNormalization
        The normalisation (its statistics are updated only in training).
    feats : torch.Tensor
        (batch, time, features).
    lengths : torch.Tensor
        (batch,) relative lengths.
    ids : list of str, optional
        The utterances of the batch, named in the warning.
    **kwargs : dict
        Passed to ``normalize`` (such as ``epoch``).

    Returns
    -------
    torch.Tensor
        The normalised features (non-finite where the input was).

    Example
    -------
    >>> from speechbrain.processing.features import InputNormalization
    >>> normalize = InputNormalization(norm_type="global")
    >>> feats = torch.rand(2, 10, 4)
    >>> normalize_finite(normalize, feats, torch.ones(2), ["a", "b"]).shape
    torch.Size([2, 10, 4])
    >>> feats[1, 3, 0] = float("nan")
    >>> before = normalize.glob_mean.clone()
    >>> _ = normalize_finite(normalize, feats, torch.ones(2), ["a", "b"])
    >>> torch.equal(normalize.glob_mean, before)
    True
    """
    finite = torch.isfinite(feats).flatten(1).all(dim=1)
    if not normalize.training or bool(finite.all()):
        return normalize(feats, lengths, **kwargs)
    bad = (~finite).nonzero().flatten().tolist()
    named = ", ".join(ids[i] for i in bad) if ids is not None else f"{len(bad)}"
    logger.warning(
        f"Non-finite features in {named} (utterances of this batch): the "
        "normalisation's statistics are left as they were, and the batch's "
        "loss is not finite, so its step is skipped."
    )
    normalize.eval()
    try:
        return normalize(feats, lengths, **kwargs)
    finally:
        normalize.train()
