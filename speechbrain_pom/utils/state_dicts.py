"""The comparison of a model's state_dict with a checkpoint's, shared by the
strict loaders of pre-trained weights and by checkpoint recovery.

Authors
* speechbrain-pom contributors 2026
"""

# Keys named in a mismatch message, per kind of mismatch.
MAX_KEYS_LISTED = 20


def compare_state_dicts(expected, found):
    """The keys that differ between a model's state_dict and a checkpoint's.

    Arguments
    ---------
    expected : dict
        The model's ``{key: tensor}``.
    found : dict
        The checkpoint's ``{key: tensor}``.

    Returns
    -------
    missing : list of str
        Keys of the model that the checkpoint lacks.
    unexpected : list of str
        Keys of the checkpoint that the model lacks.
    wrong_shapes : list of str
        Keys of both, with different shapes, and the two shapes.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shapes = [
        f"{key}: checkpoint {tuple(found[key].shape)}, "
        f"model {tuple(expected[key].shape)}"
        for key in sorted(set(found) & set(expected))
        if found[key].shape != expected[key].shape
    ]
    return missing, unexpected, wrong_shapes


def describe_mismatch(checkpoint_file, model_name, missing, unexpected, wrong_shapes):
    """One line naming the mismatched keys of a checkpoint, or None if none.

    Arguments
    ---------
    checkpoint_file : str
        The checkpoint, named in the message.
    model_name : str
        What the checkpoint should fit, named in the message.
    missing, unexpected, wrong_shapes : list of str
        As returned by ``compare_state_dicts``.

    Returns
    -------
    str or None
        The message.

    Example
    -------
    >>> import torch
    >>> model = {"a": torch.zeros(2), "b": torch.zeros(3)}
    >>> mismatch = compare_state_dicts(model, {"b": torch.zeros(4)})
    >>> describe_mismatch("m.ckpt", "it", *mismatch)
    'm.ckpt does not match it (another mixer or size?): 1 missing keys: a; ...'
    """
    if not (missing or unexpected or wrong_shapes):
        return None
    parts = []
    for title, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", wrong_shapes),
    ):
        if keys:
            listed = ", ".join(keys[:MAX_KEYS_LISTED])
            if len(keys) > MAX_KEYS_LISTED:
                listed += f" and {len(keys) - MAX_KEYS_LISTED} more"
            parts.append(f"{len(keys)} {title}: {listed}")
    return (
        f"{checkpoint_file} does not match {model_name} (another mixer or "
        "size?): " + "; ".join(parts)
    )
