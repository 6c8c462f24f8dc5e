"""Writing an inference folder: a yaml template filled with the values a recipe
trained with, and a folder that appears whole or not at all.

Authors
* speechbrain-pom contributors 2026
"""

import contextlib
import io
import os
import shutil

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, TaggedScalar

PLACEHOLDER_TAG = "!PLACEHOLDER"


def yaml_tag(tag):
    """A tagged empty yaml value, such as ``!new:package.Class``, for
    ``fill_yaml_template``.

    Arguments
    ---------
    tag : str
        The tag, with its ``!``.

    Returns
    -------
    ruamel.yaml.comments.TaggedScalar
        The value.
    """
    return TaggedScalar("", tag=tag)


def _fill(node, values, filled):
    """Replaces, in place, the placeholders of a mapping (recursively)."""
    for key, value in node.items():
        tag = getattr(getattr(value, "tag", None), "value", None)
        if tag == PLACEHOLDER_TAG:
            if key not in values:
                raise KeyError(f"No value for the placeholder {key!r}")
            node[key] = values[key]
            filled.add(key)
        elif isinstance(value, CommentedMap):
            _fill(value, values, filled)


def fill_yaml_template(template_file, values):
    """Fills every ``key: !PLACEHOLDER`` of a HyperPyYAML template.

    The template is read as plain yaml (nothing is built), so that its tags
    (``!new:``, ``!ref``, ``!include:``) and comments are written back as
    they are.

    Arguments
    ---------
    template_file : str
        The template.
    values : dict
        ``{key: value}`` for every placeholder, at any depth; a value is a
        number, a string, a list, a dict, None or a ``yaml_tag``.

    Returns
    -------
    str
        The filled yaml.

    Raises
    ------
    KeyError
        If a placeholder has no value, or a value no placeholder.

    Example
    -------
    >>> import tempfile
    >>> template = os.path.join(tempfile.mkdtemp(), "template.yaml")
    >>> with open(template, "w") as fout:
    ...     _ = fout.write("rate: !PLACEHOLDER\\nlayer: !new:torch.nn.Identity\\n")
    >>> print(fill_yaml_template(template, {"rate": 16000}), end="")
    rate: 16000
    layer: !new:torch.nn.Identity
    """
    yaml = _round_trip_yaml()
    with open(template_file, encoding="utf-8") as fin:
        document = yaml.load(fin)
    filled = set()
    _fill(document, values, filled)
    if set(values) - filled:
        raise KeyError(
            f"{template_file} has no placeholder for {sorted(set(values) - filled)}"
        )
    stream = io.StringIO()
    yaml.dump(document, stream)
    return stream.getvalue()


def _round_trip_yaml():
    """A ruamel loader and dumper that keeps tags and comments."""
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    return yaml


def extend_yaml(base_text, extension_file):
    """One standalone yaml: ``base_text`` without the keys that
    ``extension_file`` defines, followed by that file as it is.

    A model hub serves each yaml file on its own (``from_hparams`` fetches
    only the file it is given), so a yaml that ``!include``-s another cannot
    be shared; this writes the other's keys out instead.

    Arguments
    ---------
    base_text : str
        The yaml extended, such as a filled ``fill_yaml_template``.
    extension_file : str
        Yaml whose top-level keys replace the base's or are added; its
        ``!ref`` may name any key of the base.

    Returns
    -------
    str
        The standalone yaml.

    Example
    -------
    >>> import tempfile
    >>> extension = os.path.join(tempfile.mkdtemp(), "extension.yaml")
    >>> with open(extension, "w") as fout:
    ...     _ = fout.write("decoding: streaming\\nsource: !ref <rate>\\n")
    >>> print(extend_yaml("rate: 16000\\ndecoding: offline\\n", extension), end="")
    rate: 16000
    <BLANKLINE>
    decoding: streaming
    source: !ref <rate>
    """
    yaml = _round_trip_yaml()
    document = yaml.load(base_text)
    with open(extension_file, encoding="utf-8") as fin:
        extension_text = fin.read()
    for key in yaml.load(extension_text):
        document.pop(key, None)
    stream = io.StringIO()
    yaml.dump(document, stream)
    return stream.getvalue() + "\n" + extension_text


@contextlib.contextmanager
def folder_written_whole(final_folder):
    """Yields a folder to write into, which replaces ``final_folder`` when the
    ``with`` block ends without an error.

    The files are written in ``<final_folder>.incomplete`` and the folders are
    then swapped by renames, so a crash never leaves a ``final_folder`` that
    mixes the files of two writes: it holds the old files or the new ones.

    Arguments
    ---------
    final_folder : str
        The folder to (re)write.

    Yields
    ------
    str
        The folder in which to write the files.

    Example
    -------
    >>> import tempfile
    >>> final = os.path.join(tempfile.mkdtemp(), "model")
    >>> with folder_written_whole(final) as folder:
    ...     _ = open(os.path.join(folder, "model.ckpt"), "w").write("weights")
    >>> os.listdir(final), os.path.exists(final + ".incomplete")
    (['model.ckpt'], False)
    """
    final_folder = os.path.abspath(final_folder)
    staging = final_folder + ".incomplete"
    previous = final_folder + ".previous"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    yield staging
    shutil.rmtree(previous, ignore_errors=True)
    if os.path.exists(final_folder):
        os.rename(final_folder, previous)
    os.rename(staging, final_folder)
    shutil.rmtree(previous, ignore_errors=True)
