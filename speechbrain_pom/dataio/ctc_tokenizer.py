"""Text <-> CTC token ids for the CTC recipes, and the tokenizer file of their
inference folder.

Kept in the package because it is the contract between training and
inference, not recipe logic: the token ids a recipe trains on must be those
that ``speechbrain.inference.ASR.EncoderASR`` decodes from the exported
``tokenizer.ckpt`` (a ``CTCTextEncoder`` for characters, a SentencePiece
model otherwise), with the CTC blank at the same index.

Authors
* speechbrain-pom contributors 2026
"""

import os

from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.tokenizers.SentencePiece import (
    SentencePiece,
    spm_decode_preserve_leading_space,
)

from speechbrain_pom.inference.export import yaml_tag

SENTENCEPIECE_TYPES = ("bpe", "unigram")
# SpeechBrain's Pretrainer fetches each loadable as <name>.ckpt.
TOKENIZER_FILE = "tokenizer.ckpt"


class CTCTokenizer:
    """Characters or a SentencePiece model, with the CTC blank at index
    ``blank_index`` (the ``<blank>`` label of the character encoder, the
    unknown piece of the SentencePiece model, as in SpeechBrain's CTC recipes).

    Arguments
    ---------
    token_type : str
        "char", "bpe" or "unigram".
    output_neurons : int
        The size of the CTC output layer; the vocabulary (blank included)
        must have this size.
    blank_index : int
        Index of the CTC blank.
    char_alphabet : str, optional
        The characters, for ``token_type`` "char".
    model_dir : str, optional
        Where the SentencePiece model is trained (or found, if trained before).
    train_csv : str, optional
        The training csv (column ``wrd``) the SentencePiece model learns from.
    character_coverage : float
        SentencePiece's character coverage.

    Example
    -------
    >>> tokenizer = CTCTokenizer("char", 4, 0, char_alphabet=" AB")
    >>> tokenizer.encode("AB A")
    [2, 3, 1, 2]
    >>> tokenizer.decode([2, 3, 1, 2])
    'AB A'
    """

    def __init__(
        self,
        token_type,
        output_neurons,
        blank_index,
        char_alphabet=None,
        model_dir=None,
        train_csv=None,
        character_coverage=1.0,
    ):
        self.token_type = token_type
        if token_type == "char":
            if not char_alphabet:
                raise ValueError("token_type char needs a char_alphabet")
            self.char_encoder = CTCTextEncoder()
            self.char_encoder.insert_blank(index=blank_index)
            self.char_encoder.update_from_iterable(char_alphabet)
            vocab_size = len(self.char_encoder)
        elif token_type in SENTENCEPIECE_TYPES:
            self.processor = SentencePiece(
                model_dir=model_dir,
                vocab_size=output_neurons,
                annotation_train=train_csv,
                annotation_read="wrd",
                annotation_format="csv",
                model_type=token_type,
                character_coverage=character_coverage,
            ).sp
            vocab_size = self.processor.vocab_size()
        else:
            raise ValueError(
                f"token_type must be char, bpe or unigram, not {token_type!r}"
            )
        if vocab_size != output_neurons:
            raise ValueError(
                f"The {token_type} vocabulary has {vocab_size} tokens (blank "
                f"included) but output_neurons is {output_neurons}."
            )

    def encode(self, text):
        """Token ids (list of int) of a transcript."""
        if self.token_type == "char":
            return self.char_encoder.encode_sequence(list(text))
        return self.processor.encode_as_ids(text)

    def decode(self, token_ids):
        """Transcript (str) of a sequence of token ids."""
        if self.token_type == "char":
            return "".join(self.char_encoder.decode_ndim(token_ids))
        return self.processor.decode_ids([int(index) for index in token_ids])

    def vocab_list(self):
        """The label of every token id, for the CTC beam search."""
        if self.token_type == "char":
            labels = self.char_encoder.ind2lab
            return [labels[index] for index in range(len(labels))]
        return [
            self.processor.id_to_piece(index)
            for index in range(self.processor.vocab_size())
        ]

    def save(self, folder):
        """Writes the tokenizer into ``folder`` as ``tokenizer.ckpt``.

        Arguments
        ---------
        folder : str
            The inference folder.

        Returns
        -------
        ruamel.yaml.comments.TaggedScalar
            The yaml value that builds an empty tokenizer of the right class,
            for SpeechBrain's ``Pretrainer`` to load the file into.
        """
        tokenizer_file = os.path.join(folder, TOKENIZER_FILE)
        if self.token_type == "char":
            self.char_encoder.save(tokenizer_file)
            return yaml_tag("!new:speechbrain.dataio.encoder.CTCTextEncoder")
        with open(tokenizer_file, "wb") as fout:
            fout.write(self.processor.serialized_model_proto())
        return yaml_tag("!new:sentencepiece.SentencePieceProcessor")


def decode_tokens_streaming(tokenizer, token_ids, context):
    """The text that one chunk's tokens add to a stream's transcript, for the
    tokenizer of an inference folder (``tokenizer_decode_streaming`` of
    SpeechBrain's ``StreamingASR``).

    Arguments
    ---------
    tokenizer : CTCTextEncoder or sentencepiece.SentencePieceProcessor
        The inference folder's tokenizer.
    token_ids : list of int
        The tokens the chunk adds (greedy CTC, repeats and blanks removed).
    context : speechbrain.tokenizers.SentencePiece.SentencePieceDecoderStreamingContext
        Per stream, updated in place: SentencePiece keeps the space before a
        word that starts a chunk (characters need no context).

    Returns
    -------
    str
        The new text; the concatenated texts of a stream equal the decoding
        of all its tokens at once.

    Example
    -------
    >>> from speechbrain.tokenizers.SentencePiece import (
    ...     SentencePieceDecoderStreamingContext,
    ... )
    >>> characters = CTCTextEncoder()
    >>> characters.update_from_iterable("ab ", sequence_input=True)
    >>> context = SentencePieceDecoderStreamingContext()
    >>> ids = characters.encode_sequence(list("ab ba"))
    >>> [decode_tokens_streaming(characters, ids[i : i + 2], context) for i in (0, 2)]
    ['ab', ' b']
    """
    if isinstance(tokenizer, CTCTextEncoder):
        return "".join(tokenizer.decode_ndim(token_ids))
    return spm_decode_preserve_leading_space(tokenizer, token_ids, context)
