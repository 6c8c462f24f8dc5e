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
from speechbrain.tokenizers.SentencePiece import SentencePiece

from speechbrain_pom.export import yaml_tag

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
