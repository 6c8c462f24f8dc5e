"""A deterministic tiny English speech corpus, synthesised offline.

The corpus lets the recipes and the tests run end to end without downloading
anything. Sentences come from a small template grammar over a few hundred
common English words, and are spoken by eSpeak NG (the library and its voice
data ship with the ``espeakng-loader`` pip package, driven here through its C
API with ctypes). A "speaker" is an (accent, voice variant, speaking rate,
pitch) combination; the dev and test speakers use accent/variant combinations
that never occur in train, and all sentences are distinct across splits.

The corpus is written in the LibriSpeech layout::

    <out>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac
    <out>/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt

with the splits ``train-clean-100``, ``dev-clean`` and ``test-clean``, 16 kHz
mono FLAC audio and UPPERCASE transcripts (letters, apostrophes and spaces).
``make_commonvoice_layout`` converts it to a CommonVoice release layout.

Command line (the defaults are shown; ``--workers N`` sets the number of
processes and ``--commonvoice`` also writes ``<out>/CommonVoice/en``)::

    python -m tools.tiny_corpus --out DIR \\
        --train 1500 --dev 100 --test 150 --seed 1234

``--unlabelled-hours H`` writes the low-resource layout of
``generate_lowresource_corpus`` instead (``--labelled-minutes 5 10 60``).

Authors
 * speechbrain-pom contributors
"""

import argparse
import ctypes
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import espeakng_loader
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
MANIFEST_NAME = "tiny_corpus.json"
# Sentences with their natural casing and punctuation (used for CommonVoice).
SENTENCES_NAME = "sentences.tsv"
# Bump when a change of the generator changes its output.
GENERATOR_VERSION = 1
UTTERANCES_PER_SPEAKER = 25
# Sentence lengths that give utterances of about 2 to 5 seconds.
WORD_COUNT_RANGE = (7, 14)

# eSpeak NG voices are "<language>+<variant>"; "en" is British English.
ACCENTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = (
    *(f"m{index}" for index in range(1, 8)),
    *(f"f{index}" for index in range(1, 5)),
    "adam",
    "Alicia",
    "Andy",
    "benjamin",
    "david",
    "edward",
    "linda",
    "max",
    "robert",
    "steph",
)
RATE_RANGE = (140, 200)  # words per minute
PITCH_RANGE = (30, 70)  # eSpeak base pitch, 0-100

# The eSpeak NG C API constants used below (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_POSITION_CHARACTER = 1
_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# ---------------------------------------------------------------------------
# Vocabulary and grammar
# ---------------------------------------------------------------------------

NAMES = (
    "Anna", "Tom", "Mary", "James", "Lucy", "Peter", "Sarah", "David",
    "Emma", "John", "Alice", "Henry", "Grace", "Oliver", "Rose", "Daniel",
    "Kate", "Robert", "Helen", "Michael", "Laura", "George", "Sophie", "Paul",
)  # fmt: skip
PEOPLE = (
    "man", "woman", "boy", "girl", "doctor", "teacher", "farmer", "driver",
    "baker", "sailor", "nurse", "student", "king", "queen", "soldier",
    "painter", "writer", "fisherman", "singer", "captain",
)  # fmt: skip
PERSON_ADJECTIVES = (
    "old", "young", "tall", "quiet", "happy", "tired", "clever", "kind",
    "busy", "angry", "friendly", "brave", "little", "strange",
)  # fmt: skip
RELATIVES = (
    "mother", "father", "sister", "brother", "uncle", "aunt", "friend",
    "neighbour", "cousin", "grandmother", "son", "daughter", "wife", "husband",
)  # fmt: skip
POSSESSIVES = ("my", "your", "his", "her", "our", "their")

THINGS = (
    "book", "letter", "box", "key", "bag", "hat", "coat", "cup", "chair",
    "table", "lamp", "clock", "picture", "map", "bicycle", "basket", "bottle",
    "umbrella", "ring", "knife", "blanket", "shoe", "ball", "pen", "radio",
    "kettle", "ladder", "bucket", "rope", "candle", "mirror", "jacket",
    "wallet", "ticket", "newspaper", "photograph",
)  # fmt: skip
THING_ADJECTIVES = (
    "red", "blue", "green", "small", "big", "heavy", "new", "old", "broken",
    "wooden", "clean", "dirty", "yellow", "black", "white", "brown", "little",
    "empty", "strange", "beautiful", "cheap", "expensive",
)  # fmt: skip
THING_VERBS = (
    ("found", "find"), ("bought", "buy"), ("sold", "sell"),
    ("carried", "carry"), ("brought", "bring"), ("washed", "wash"),
    ("painted", "paint"), ("fixed", "fix"), ("dropped", "drop"),
    ("lost", "lose"), ("kept", "keep"), ("cleaned", "clean"), ("moved", "move"),
    ("took", "take"), ("hid", "hide"), ("borrowed", "borrow"),
    ("needed", "need"), ("wanted", "want"), ("left", "leave"),
    ("picked up", "pick up"), ("looked at", "look at"), ("forgot", "forget"),
)  # fmt: skip

FOODS = (
    "bread", "cheese", "soup", "rice", "tea", "coffee", "milk", "butter",
    "honey", "apples", "eggs", "potatoes", "cherries", "oranges", "fish",
    "cake", "meat", "carrots", "beans", "strawberries",
)  # fmt: skip
FOOD_ADJECTIVES = ("fresh", "warm", "cold", "sweet", "hot", "delicious", "good")
FOOD_DETERMINERS = ("some", "the", "our", "her", "his", "their")
FOOD_VERBS = (
    ("ate", "eat"), ("cooked", "cook"), ("bought", "buy"), ("sold", "sell"),
    ("brought", "bring"), ("wanted", "want"), ("shared", "share"),
    ("tasted", "taste"), ("ordered", "order"), ("carried", "carry"),
)  # fmt: skip

ANIMALS = (
    "dog", "cat", "horse", "bird", "cow", "sheep", "duck", "rabbit", "goat",
    "pig", "mouse", "fox", "owl", "donkey", "chicken", "puppy", "kitten",
)  # fmt: skip
ANIMAL_ADJECTIVES = (
    "small", "big", "old", "young", "brown", "black", "white", "hungry",
    "lazy", "noisy", "little", "lost", "friendly", "wild",
)  # fmt: skip
ANIMAL_VERBS = (
    ("saw", "see"), ("fed", "feed"), ("washed", "wash"), ("followed", "follow"),
    ("found", "find"), ("watched", "watch"), ("called", "call"),
    ("chased", "chase"), ("heard", "hear"), ("lost", "lose"),
    ("caught", "catch"), ("helped", "help"),
)  # fmt: skip
COUNTABLE_DETERMINERS = ("the", "a", "my", "her", "his", "our", "their", "this", "that")

INTRANSITIVE_VERBS = (
    ("slept", "sleep"), ("walked", "walk"), ("waited", "wait"),
    ("sang", "sing"), ("danced", "dance"), ("worked", "work"),
    ("played", "play"), ("rested", "rest"), ("ran", "run"),
    ("laughed", "laugh"), ("sat", "sit"), ("stood", "stand"),
    ("stayed", "stay"), ("swam", "swim"), ("cried", "cry"), ("talked", "talk"),
)  # fmt: skip
PLACES = (
    "in the garden", "near the river", "at the station", "on the hill",
    "by the old bridge", "in the kitchen", "at school", "in the market",
    "behind the house", "under the big tree", "across the street",
    "in the village", "at the shop", "on the farm", "in the park",
    "by the sea", "in the forest", "near the church", "in the library",
    "at the harbour", "on the beach", "in the city", "at the corner",
    "in the yard", "near the lake", "outside the bakery", "in the hall",
)  # fmt: skip
PAST_TIMES = (
    "yesterday", "last night", "this morning", "on Monday", "on Tuesday",
    "on Friday", "on Sunday", "after dinner", "before lunch", "last week",
    "in the evening", "at noon", "last summer", "in the winter", "at dawn",
    "an hour ago", "two days ago", "after school",
)  # fmt: skip
FUTURE_TIMES = (
    "tomorrow", "tonight", "next week", "on Saturday", "on Wednesday",
    "after lunch", "tomorrow morning", "next summer", "this afternoon",
    "before dinner", "on Thursday",
)  # fmt: skip
FEELINGS = (
    "happy", "tired", "angry", "sad", "worried", "surprised", "proud",
    "nervous", "glad", "upset",
)  # fmt: skip
WEATHER = (
    "cold", "warm", "quiet", "dark", "sunny", "windy", "busy", "noisy", "wet",
    "bright", "calm",
)  # fmt: skip

# Slots are filled independently; a capitalised slot starts the sentence.
TEMPLATES = (
    "{Subject} {action_past} {place}.",
    "{Subject} {intransitive_past} {place} {past_time}.",
    "{Past_time}, {subject} {action_past} {place}.",
    "Did {subject} {action_base} {place} {past_time}?",
    "{Subject} didn't {action_base}, but {subject} did.",
    "{Subject} said that {subject} {intransitive_past} {place}.",
    "There was {an_animal} {place} {past_time}.",
    "{Subject} will {action_base} {future_time}.",
    "Please {action_base} {place} {future_time}.",
    "It was very {weather} {place} {past_time}, so {subject} stayed at home.",
    "It's {weather} {place} today, so {subject} will stay at home.",
    "{Subject} couldn't find {thing} {place}.",
    "Where did {subject} {action_base} {past_time}?",
    "{Subject} and {subject} {intransitive_past} {place}.",
    "{Subject} was {feeling} because {subject} {intransitive_past} {place}.",
    "{Subject} {action_past} and then {intransitive_past} {place}.",
    "Why did {subject} {action_base} {past_time}?",
    "{Subject} wasn't {feeling} when {subject} {intransitive_past} {place}.",
    "Yes, {subject} {action_past} {place} {past_time}.",
    "No, {subject} can't {action_base} {future_time}.",
)


def _with_article(determiner, phrase):
    """Turns "a" into "an" before a vowel (enough for this vocabulary)."""
    if determiner == "a" and phrase[0] in "aeiou":
        determiner = "an"
    return f"{determiner} {phrase}"


def _countable_phrase(rng, nouns, adjectives):
    phrase = rng.choice(nouns)
    if rng.random() < 0.6:
        phrase = f"{rng.choice(adjectives)} {phrase}"
    return _with_article(rng.choice(COUNTABLE_DETERMINERS), phrase)


def _subject(rng):
    form = rng.randrange(4)
    if form == 0:
        return rng.choice(NAMES)
    if form == 1:
        return f"the {rng.choice(PERSON_ADJECTIVES)} {rng.choice(PEOPLE)}"
    if form == 2:
        return f"{rng.choice(POSSESSIVES)} {rng.choice(RELATIVES)}"
    return f"{rng.choice(NAMES)}'s {rng.choice(RELATIVES)}"


def _food(rng):
    phrase = rng.choice(FOODS)
    if rng.random() < 0.5:
        phrase = f"{rng.choice(FOOD_ADJECTIVES)} {phrase}"
    return f"{rng.choice(FOOD_DETERMINERS)} {phrase}"


def _action(rng, tense):
    """A transitive verb with a matching object, e.g. "fed the hungry dog"."""
    kind = rng.randrange(3)
    if kind == 0:
        verbs, phrase = THING_VERBS, _countable_phrase(rng, THINGS, THING_ADJECTIVES)
    elif kind == 1:
        verbs, phrase = FOOD_VERBS, _food(rng)
    else:
        verbs, phrase = ANIMAL_VERBS, _countable_phrase(rng, ANIMALS, ANIMAL_ADJECTIVES)
    past, base = rng.choice(verbs)
    return f"{past if tense == 'past' else base} {phrase}"


_SLOT_FILLERS = {
    "subject": _subject,
    "action_past": lambda rng: _action(rng, "past"),
    "action_base": lambda rng: _action(rng, "base"),
    "intransitive_past": lambda rng: rng.choice(INTRANSITIVE_VERBS)[0],
    "thing": lambda rng: _countable_phrase(rng, THINGS, THING_ADJECTIVES),
    "an_animal": lambda rng: _with_article(
        "a", f"{rng.choice(ANIMAL_ADJECTIVES)} {rng.choice(ANIMALS)}"
    ),
    "place": lambda rng: rng.choice(PLACES),
    "past_time": lambda rng: rng.choice(PAST_TIMES),
    "future_time": lambda rng: rng.choice(FUTURE_TIMES),
    "feeling": lambda rng: rng.choice(FEELINGS),
    "weather": lambda rng: rng.choice(WEATHER),
}


def make_sentence(rng):
    """Draws one English sentence, with natural casing and punctuation.

    Arguments
    ---------
    rng : random.Random
        The random generator (the only source of randomness).

    Returns
    -------
    str
        The sentence.

    Example
    -------
    >>> sentence = make_sentence(random.Random(0))
    >>> sentence[0].isupper() and sentence[-1] in ".?"
    True
    """

    def fill(match):
        slot = match.group(1)
        text = _SLOT_FILLERS[slot.lower()](rng)
        return text[0].upper() + text[1:] if slot[0].isupper() else text

    return re.sub(r"\{(\w+)\}", fill, rng.choice(TEMPLATES))


def to_transcript(sentence):
    """Normalises a sentence the LibriSpeech way.

    Arguments
    ---------
    sentence : str
        Text with natural casing and punctuation.

    Returns
    -------
    str
        UPPERCASE letters, apostrophes and single spaces.

    Example
    -------
    >>> to_transcript("Yes, Anna's dog didn't bark.")
    "YES ANNA'S DOG DIDN'T BARK"
    """
    return " ".join(re.sub(r"[^A-Z']+", " ", sentence.upper()).split())


def _draw_sentences(rng, count, seen):
    """Draws ``count`` sentences of a suitable length, with new transcripts."""
    sentences = []
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 100 * count:
            raise ValueError(f"Cannot draw {count} distinct sentences.")
        sentence = make_sentence(rng)
        transcript = to_transcript(sentence)
        n_words = len(transcript.split())
        if transcript not in seen and (
            WORD_COUNT_RANGE[0] <= n_words <= WORD_COUNT_RANGE[1]
        ):
            seen.add(transcript)
            sentences.append(sentence)
    return sentences


# ---------------------------------------------------------------------------
# Corpus plan
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an eSpeak NG voice and its prosody settings."""

    speaker_id: int
    chapter_id: int
    accent: str
    variant: str
    rate: int
    pitch: int

    @property
    def voice_name(self):
        """The eSpeak NG voice name, e.g. "en-us+m3"."""
        return f"{self.accent}+{self.variant}"


def _speaker_count(n_utterances):
    """At least two speakers per split (when possible) for some variety."""
    wanted = max(2, math.ceil(n_utterances / UTTERANCES_PER_SPEAKER))
    return min(n_utterances, wanted)


def plan_corpus(n_train, n_dev, n_test, seed, train_splits=None):
    """Decides the speakers and sentences of every split, without any audio.

    Dev and test speakers use (accent, variant) voices that no train speaker
    uses, and every sentence occurs only once in the whole corpus.

    Arguments
    ---------
    n_train, n_dev, n_test : int
        Number of utterances of each split.
    seed : int
        Seed of the random generator.
    train_splits : dict, optional
        ``{split folder: number of utterances}`` of several training splits,
        which share the training voices; replaces ``n_train`` (which is then
        ignored) and the single ``train-clean-100`` split.

    Returns
    -------
    list of tuple
        One ``(split_folder, speaker, sentences)`` tuple per speaker.

    Example
    -------
    >>> plan = plan_corpus(4, 2, 2, seed=0)
    >>> [len(sentences) for split, speaker, sentences in plan]
    [2, 2, 1, 1, 1, 1]
    >>> sorted({split for split, speaker, sentences in plan})
    ['dev-clean', 'test-clean', 'train-clean-100']
    >>> plan = plan_corpus(0, 2, 2, seed=0, train_splits={"a": 3, "b": 2})
    >>> [(split, len(sentences)) for split, speaker, sentences in plan][:4]
    [('a', 2), ('a', 1), ('b', 1), ('b', 1)]
    """
    rng = random.Random(seed)
    if train_splits is None:
        train_splits = {SPLITS["train"]: n_train}
    counts = {**train_splits, SPLITS["dev"]: n_dev, SPLITS["test"]: n_test}
    speaker_counts = {split: _speaker_count(count) for split, count in counts.items()}
    n_dev_speakers = speaker_counts[SPLITS["dev"]]
    n_held_out = n_dev_speakers + speaker_counts[SPLITS["test"]]
    voices = [(accent, variant) for accent in ACCENTS for variant in VARIANTS]
    rng.shuffle(voices)
    if n_held_out >= len(voices):
        raise ValueError(
            f"Dev and test need {n_held_out} held-out voices, "
            f"only {len(voices) - 1} are available: use fewer utterances."
        )
    # The first voices are held out for dev and test; train cycles the rest.
    train_voices = voices[n_held_out:]
    voice_pools = {
        SPLITS["dev"]: voices[:n_dev_speakers],
        SPLITS["test"]: voices[n_dev_speakers:n_held_out],
        **{split: train_voices for split in train_splits},
    }
    n_speakers = sum(speaker_counts.values())
    speaker_ids = rng.sample(range(100, 10000), n_speakers)
    chapter_ids = rng.sample(range(1000, 100000), n_speakers)

    plan = []
    seen_transcripts = set()
    # Training splits continue cycling through the training voices.
    voice_offsets = dict.fromkeys(counts, 0)
    train_offset = 0
    for split in counts:
        if split in train_splits:
            voice_offsets[split] = train_offset
            train_offset += speaker_counts[split]
    for split, count in counts.items():
        sentences = _draw_sentences(rng, count, seen_transcripts)
        n_split_speakers = speaker_counts[split]
        pool = voice_pools[split]
        for index in range(n_split_speakers):
            accent, variant = pool[(voice_offsets[split] + index) % len(pool)]
            speaker = Speaker(
                speaker_id=speaker_ids.pop(0),
                chapter_id=chapter_ids.pop(0),
                accent=accent,
                variant=variant,
                rate=rng.randint(*RATE_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
            )
            # Round-robin split of the sentences, so speakers differ by at most one.
            plan.append((split, speaker, sentences[index::n_split_speakers]))
    return plan


# ---------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------


class ESpeakSynthesizer:
    """Speech synthesis with the eSpeak NG library of ``espeakng-loader``.

    Some eSpeak NG voices use random numbers, seeded from the clock unless
    ``seed`` sets them. eSpeak NG also keeps internal state from one utterance
    to the next (the output depends on what was spoken before), and that state
    survives ``espeak_Terminate``. Reproducible audio therefore needs a fixed
    seed and a fresh process for each sequence of utterances:
    ``generate_corpus`` uses one process per speaker.

    Arguments
    ---------
    seed : int
        Seed of eSpeak NG's random generator.

    It has no doctest on purpose: the library keeps state per process, and a
    synthesiser made in the test process would leak into the worker processes
    forked from it; ``generate_corpus``'s example exercises it there.
    """

    def __init__(self, seed=0):
        self.library = ctypes.CDLL(espeakng_loader.get_library_path())
        self.library.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.library.espeak_SetParameter.argtypes = [ctypes.c_int] * 3
        self.library.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = self.library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            espeakng_loader.get_data_path().encode(),
            _INITIALIZE_DONT_EXIT,
        )
        if self.sample_rate <= 0:
            raise RuntimeError("Could not initialise the eSpeak NG library.")
        self.library.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        self._chunks = []
        # Kept as an attribute: ctypes needs the callback object to stay alive.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self.library.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, n_samples, events):
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, (n_samples,)).copy())
        return 0  # 0 means "continue synthesis"

    def synthesize(self, text, voice_name, rate, pitch):
        """Speaks one text.

        Arguments
        ---------
        text : str
            The text to speak.
        voice_name : str
            An eSpeak NG voice, e.g. "en-us+m3".
        rate : int
            Speaking rate in words per minute.
        pitch : int
            Base pitch, 0-100.

        Returns
        -------
        numpy.ndarray
            int16 samples at ``self.sample_rate``.
        """
        if self.library.espeak_SetVoiceByName(voice_name.encode()) != 0:
            raise RuntimeError(f"eSpeak NG has no voice named {voice_name!r}.")
        self.library.espeak_SetParameter(_PARAMETER_RATE, rate, 0)
        self.library.espeak_SetParameter(_PARAMETER_PITCH, pitch, 0)
        self._chunks = []
        encoded = text.encode("utf-8")
        status = self.library.espeak_Synth(
            encoded,
            len(encoded) + 1,
            0,
            _POSITION_CHARACTER,
            0,
            _CHARS_UTF8,
            None,
            None,
        )
        if status != 0 or not self._chunks:
            raise RuntimeError(f"eSpeak NG failed to speak {text!r} (code {status}).")
        return np.concatenate(self._chunks)


def resample_int16(audio, orig_rate, new_rate):
    """Resamples int16 audio with a polyphase filter (exact and deterministic).

    Arguments
    ---------
    audio : numpy.ndarray
        int16 samples.
    orig_rate, new_rate : int
        Sampling rates in Hz.

    Returns
    -------
    numpy.ndarray
        int16 samples at ``new_rate``.

    Example
    -------
    >>> resample_int16(np.zeros(22050, dtype=np.int16), 22050, 16000).shape
    (16000,)
    """
    divisor = math.gcd(orig_rate, new_rate)
    resampled = resample_poly(
        audio.astype(np.float64), new_rate // divisor, orig_rate // divisor
    )
    return np.clip(np.round(resampled), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------
# Corpus generation
# ---------------------------------------------------------------------------


def _settings(n_train, n_dev, n_test, seed):
    return {
        "generator_version": GENERATOR_VERSION,
        "n_train": n_train,
        "n_dev": n_dev,
        "n_test": n_test,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
    }


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def _write_json(content, path):
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(content, stream, indent=2)


def _default_workers():
    return max(1, min(2, os.cpu_count() or 1))


def _worker_context():
    # Forked workers start quickly; spawn is the fallback where fork is missing.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def generate_corpus(
    out_dir,
    n_train=1500,
    n_dev=100,
    n_test=150,
    seed=1234,
    num_workers=None,
    show_progress=True,
):
    """Generates the tiny corpus in the LibriSpeech layout.

    Nothing is done if ``<out_dir>/LibriSpeech`` already holds a complete
    corpus generated with the same settings. The output only depends on the
    settings (not on ``num_workers``).

    Arguments
    ---------
    out_dir : str
        Folder that receives the ``LibriSpeech`` folder.
    n_train, n_dev, n_test : int
        Number of utterances of train-clean-100, dev-clean and test-clean.
    seed : int
        Seed of the random generator.
    num_workers : int, optional
        Number of synthesis processes (default: up to 2).
    show_progress : bool
        Whether to show a progress bar.

    Returns
    -------
    str
        The path of the LibriSpeech root folder (holding the split folders).

    Example
    -------
    >>> import tempfile
    >>> tmpdir = tempfile.mkdtemp()
    >>> root = generate_corpus(tmpdir, 4, 2, 2, show_progress=False)
    >>> sorted(os.listdir(root))
    ['dev-clean', 'sentences.tsv', 'test-clean', 'tiny_corpus.json', 'train-clean-100']
    """
    return _generate(
        out_dir,
        _settings(n_train, n_dev, n_test, seed),
        {SPLITS["train"]: n_train},
        n_dev,
        n_test,
        num_workers,
        show_progress,
    )


def _generate(
    out_dir,
    settings,
    train_splits,
    n_dev,
    n_test,
    num_workers,
    show_progress,
    finish=None,
    final_splits=(),
):
    """Plans and synthesises the splits unless a complete corpus with the same
    settings is there; returns the LibriSpeech root.

    ``finish(root)``, if given, runs once the audio is written and returns
    entries for the manifest; ``final_splits`` names the folders it writes.
    The manifest says "complete" only after it."""
    root = os.path.join(os.path.abspath(out_dir), "LibriSpeech")
    manifest_file = os.path.join(root, MANIFEST_NAME)
    manifest = _read_json(manifest_file)
    if manifest and manifest.get("complete") and manifest.get("settings") == settings:
        logger.info("Tiny corpus already complete in %s, skipping.", root)
        return root
    split_folders = [
        os.path.join(root, split)
        for split in (*train_splits, *final_splits, SPLITS["dev"], SPLITS["test"])
    ]
    if manifest is None and any(os.path.exists(path) for path in split_folders):
        raise FileExistsError(
            f"{root} holds LibriSpeech split folders that this generator did not "
            f"write (no {MANIFEST_NAME}); refusing to overwrite them."
        )
    # Incomplete, or generated with other settings: start again.
    for path in split_folders:
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(root, exist_ok=True)
    _write_json({"settings": settings, "complete": False}, manifest_file)

    seed = settings["seed"]
    plan = plan_corpus(0, n_dev, n_test, seed, train_splits=train_splits)
    jobs = [(root, split, speaker, sentences) for split, speaker, sentences in plan]
    sentence_lines = []
    progress = tqdm(
        total=sum(train_splits.values()) + n_dev + n_test,
        desc="Synthesising",
        unit="utt",
        disable=not show_progress,
    )
    num_workers = num_workers or _default_workers()
    # One fresh process per speaker (maxtasksperchild=1) resets eSpeak NG.
    with _worker_context().Pool(num_workers, maxtasksperchild=1) as pool:
        for chapter_lines in pool.imap(_write_chapter, jobs):
            sentence_lines += chapter_lines
            progress.update(len(chapter_lines))
    progress.close()

    with open(os.path.join(root, SENTENCES_NAME), "w", encoding="utf-8") as stream:
        stream.write("ID\tsentence\n")
        stream.writelines(f"{line}\n" for line in sentence_lines)
    speakers = {
        str(speaker.speaker_id): {"split": split, **asdict(speaker)}
        for split, speaker, _ in plan
    }
    extra = finish(root) if finish else {}
    _write_json(
        {"settings": settings, "complete": True, "speakers": speakers, **extra},
        manifest_file,
    )
    logger.info("Tiny corpus written to %s.", root)
    return root


def _write_chapter(job):
    """Speaks and writes the utterances of one speaker, in a fresh process.

    Returns the ``ID<tab>sentence`` lines of the natural sentences.
    """
    root, split, speaker, sentences = job
    spk, chapter = speaker.speaker_id, speaker.chapter_id
    folder = os.path.join(root, split, str(spk), str(chapter))
    os.makedirs(folder, exist_ok=True)
    synthesizer = ESpeakSynthesizer(seed=speaker.speaker_id)
    transcript_lines, sentence_lines = [], []
    for index, sentence in enumerate(sentences):
        utterance_id = f"{spk}-{chapter}-{index:04d}"
        audio = synthesizer.synthesize(
            sentence, speaker.voice_name, speaker.rate, speaker.pitch
        )
        sf.write(
            os.path.join(folder, f"{utterance_id}.flac"),
            resample_int16(audio, synthesizer.sample_rate, SAMPLE_RATE),
            SAMPLE_RATE,
            format="FLAC",
            subtype="PCM_16",
        )
        transcript_lines.append(f"{utterance_id} {to_transcript(sentence)}\n")
        sentence_lines.append(f"{utterance_id}\t{sentence}")
    with open(
        os.path.join(folder, f"{spk}-{chapter}.trans.txt"), "w", encoding="utf-8"
    ) as stream:
        stream.writelines(transcript_lines)
    return sentence_lines


# ---------------------------------------------------------------------------
# Low-resource layout: unlabelled pre-training audio, small labelled subsets
# ---------------------------------------------------------------------------

UNLABELLED_SPLIT = "train-unlabelled"
_LABELLED_POOL = "train-labelled-pool"
# Mean utterance duration (seconds) of the grammar and voices, for planning.
_MEAN_UTTERANCE_SECONDS = 3.1
# The pool is drawn larger than the largest subset, which is then cut to size.
_POOL_MARGIN = 1.25


def labelled_split_name(minutes):
    """Folder name of a labelled subset of ``minutes`` of audio.

    Example
    -------
    >>> labelled_split_name(10), labelled_split_name(60), labelled_split_name(90)
    ('train-10min', 'train-1h', 'train-1.5h')
    """
    if minutes < 60:
        return f"train-{minutes:g}min"
    return f"train-{minutes / 60:g}h"


def generate_lowresource_corpus(
    out_dir,
    unlabelled_hours=5.0,
    labelled_minutes=(10, 60),
    n_dev=100,
    n_test=150,
    seed=1234,
    num_workers=None,
    show_progress=True,
):
    """A corpus for self-supervised learning with few labels, like Libri-light.

    Written in the LibriSpeech layout: ``train-unlabelled`` (hours of audio
    from many voices, for pre-training; its transcripts exist but are not
    meant to be used), nested labelled subsets ``train-10min`` and
    ``train-1h`` (one folder per entry of ``labelled_minutes``, each holding
    the utterances of the smaller ones, and as long as requested to within
    one utterance), and ``dev-clean`` and ``test-clean`` spoken by voices that
    no training split uses. Deterministic for a seed.

    Arguments
    ---------
    out_dir : str
        Folder that receives the ``LibriSpeech`` folder.
    unlabelled_hours : float
        Approximate duration of ``train-unlabelled``.
    labelled_minutes : sequence of float
        Durations of the labelled subsets.
    n_dev, n_test : int
        Number of utterances of dev-clean and test-clean.
    seed : int
        Seed of the random generator.
    num_workers : int, optional
        Number of synthesis processes (default: up to 2).
    show_progress : bool
        Whether to show a progress bar.

    Returns
    -------
    str
        The LibriSpeech root folder. Its ``tiny_corpus.json`` gives, under
        "splits", the minutes and number of utterances of every split.

    Example
    -------
    >>> import tempfile
    >>> root = generate_lowresource_corpus(
    ...     tempfile.mkdtemp(), 0.01, (0.1, 0.2), 2, 2, show_progress=False
    ... )
    >>> sorted(name for name in os.listdir(root) if name.startswith("train"))
    ['train-0.1min', 'train-0.2min', 'train-unlabelled']
    """
    labelled_minutes = sorted(float(minutes) for minutes in labelled_minutes)
    settings = {
        "generator_version": GENERATOR_VERSION,
        "unlabelled_hours": unlabelled_hours,
        "labelled_minutes": labelled_minutes,
        "n_dev": n_dev,
        "n_test": n_test,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
    }
    n_pool = math.ceil(
        labelled_minutes[-1] * 60 * _POOL_MARGIN / _MEAN_UTTERANCE_SECONDS
    )
    train_splits = {
        UNLABELLED_SPLIT: max(
            1, round(unlabelled_hours * 3600 / _MEAN_UTTERANCE_SECONDS)
        ),
        _LABELLED_POOL: max(2, n_pool),
    }
    subset_names = [labelled_split_name(minutes) for minutes in labelled_minutes]

    def cut_subsets(root):
        pool = _read_split(os.path.join(root, _LABELLED_POOL))
        for name, minutes in zip(subset_names, labelled_minutes, strict=True):
            total, chosen = 0.0, []
            for utterance in pool:
                if total >= minutes * 60:
                    break
                chosen.append(utterance)
                total += utterance["seconds"]
            if total < minutes * 60:
                raise RuntimeError(
                    f"The labelled pool holds {total / 60:.1f} minutes, "
                    f"less than the {minutes:g} asked for {name}."
                )
            _write_subset(root, name, chosen)
        shutil.rmtree(os.path.join(root, _LABELLED_POOL))
        splits = {
            split: _split_summary(os.path.join(root, split))
            for split in (
                UNLABELLED_SPLIT,
                *subset_names,
                SPLITS["dev"],
                SPLITS["test"],
            )
        }
        return {"splits": splits}

    return _generate(
        out_dir,
        settings,
        train_splits,
        n_dev,
        n_test,
        num_workers,
        show_progress,
        finish=cut_subsets,
        final_splits=(*subset_names, _LABELLED_POOL),
    )


def _read_split(split_folder):
    """The utterances of a split in chapter order, with their durations."""
    utterances = []
    for utterance_id, (text, audio) in _read_transcripts(split_folder).items():
        info = sf.info(audio)
        utterances.append(
            {
                "id": utterance_id,
                "text": text,
                "audio": audio,
                "seconds": info.frames / info.samplerate,
            }
        )
    return utterances


def _write_subset(root, name, utterances):
    """Writes a split of the given utterances, linking their audio files."""
    chapters = {}
    for utterance in utterances:
        speaker, chapter, _ = utterance["id"].split("-")
        chapters.setdefault((speaker, chapter), []).append(utterance)
    for (speaker, chapter), chapter_utterances in chapters.items():
        folder = os.path.join(root, name, speaker, chapter)
        os.makedirs(folder, exist_ok=True)
        for utterance in chapter_utterances:
            target = os.path.join(folder, os.path.basename(utterance["audio"]))
            try:
                os.link(utterance["audio"], target)
            except OSError:  # file systems without hard links
                shutil.copyfile(utterance["audio"], target)
        with open(
            os.path.join(folder, f"{speaker}-{chapter}.trans.txt"),
            "w",
            encoding="utf-8",
        ) as stream:
            stream.writelines(f"{u['id']} {u['text']}\n" for u in chapter_utterances)


def _split_summary(split_folder):
    utterances = _read_split(split_folder)
    return {
        "utterances": len(utterances),
        "minutes": round(sum(u["seconds"] for u in utterances) / 60, 3),
        "speakers": len({u["id"].split("-")[0] for u in utterances}),
    }


# ---------------------------------------------------------------------------
# CommonVoice layout
# ---------------------------------------------------------------------------

COMMONVOICE_COLUMNS = (
    "client_id", "path", "sentence_id", "sentence", "sentence_domain",
    "up_votes", "down_votes", "age", "gender", "accents", "variant", "locale",
    "segment",
)  # fmt: skip
COMMONVOICE_MANIFEST_NAME = "layout.json"


def _read_transcripts(split_folder):
    """Reads all ``*.trans.txt`` files of a split: {utterance_id: (text, flac)}."""
    utterances = {}
    pattern = os.path.join(split_folder, "*", "*", "*.trans.txt")
    for transcript_file in sorted(glob.glob(pattern)):
        folder = os.path.dirname(transcript_file)
        with open(transcript_file, encoding="utf-8") as stream:
            for line in stream:
                utterance_id, _, text = line.strip().partition(" ")
                flac = os.path.join(folder, f"{utterance_id}.flac")
                utterances[utterance_id] = (text, flac)
    return dict(sorted(utterances.items()))


def _read_sentences(librispeech_root):
    """Reads the natural sentences written by ``generate_corpus``, if any."""
    path = os.path.join(librispeech_root, SENTENCES_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as stream:
        next(stream)  # header
        return dict(line.rstrip("\n").split("\t", 1) for line in stream)


def _sentence_case(transcript):
    """Fallback natural text: "THE CAT SAT" -> "The cat sat."."""
    text = transcript.lower()
    return text[:1].upper() + text[1:] + "."


def _encode_clip(job):
    flac_file, mp3_file, sample_rate = job
    audio, flac_rate = sf.read(flac_file, dtype="int16")
    clip = resample_int16(audio, flac_rate, sample_rate)
    sf.write(mp3_file, clip, sample_rate, format="MP3")


def make_commonvoice_layout(
    librispeech_root,
    out_dir,
    lang="en",
    sample_rate=48000,
    num_workers=None,
    show_progress=True,
):
    """Converts a LibriSpeech-layout corpus into a CommonVoice release layout.

    Writes ``<out_dir>/<lang>/{train,dev,test}.tsv`` and ``clips/*.mp3`` from
    train-clean-100, dev-clean and test-clean. Sentences keep their natural
    casing and punctuation (read from the ``sentences.tsv`` file written by
    ``generate_corpus``, else rebuilt from the transcripts), and every other
    sentence uses the typographic apostrophe (’), as real releases mix both,
    so that the preparation's text normalisation is exercised. Clips are
    resampled to ``sample_rate`` (CommonVoice clips are usually 48 kHz).
    Nothing is done if the layout is already complete for the same settings.

    Arguments
    ---------
    librispeech_root : str
        The LibriSpeech folder (holding the split folders).
    out_dir : str
        Folder that receives the ``<lang>`` folder.
    lang : str
        Language code, used as folder name and in the clip names.
    sample_rate : int
        Sampling rate of the mp3 clips.
    num_workers : int, optional
        Number of encoding threads (default: up to 2).
    show_progress : bool
        Whether to show a progress bar (mp3 encoding takes about 40 ms of CPU
        time per clip).

    Returns
    -------
    str
        The language folder, ``<out_dir>/<lang>``.

    Example
    -------
    >>> import tempfile
    >>> tmpdir = tempfile.mkdtemp()
    >>> root = generate_corpus(tmpdir, 4, 2, 2, show_progress=False)
    >>> folder = make_commonvoice_layout(root, tmpdir, show_progress=False)
    >>> sorted(os.listdir(folder))
    ['clips', 'dev.tsv', 'layout.json', 'test.tsv', 'train.tsv']
    """
    librispeech_root = os.path.abspath(librispeech_root)
    language_folder = os.path.join(os.path.abspath(out_dir), lang)
    clips_folder = os.path.join(language_folder, "clips")
    manifest_file = os.path.join(language_folder, COMMONVOICE_MANIFEST_NAME)
    settings = {
        "source": librispeech_root,
        "source_manifest": _read_json(os.path.join(librispeech_root, MANIFEST_NAME)),
        "lang": lang,
        "sample_rate": sample_rate,
    }
    manifest = _read_json(manifest_file)
    if manifest and manifest.get("complete") and manifest.get("settings") == settings:
        logger.info("CommonVoice layout already complete in %s.", language_folder)
        return language_folder
    shutil.rmtree(clips_folder, ignore_errors=True)
    os.makedirs(clips_folder)
    _write_json({"settings": settings, "complete": False}, manifest_file)

    sentences = _read_sentences(librispeech_root)
    jobs = []
    clip_index = 0
    for split, split_folder in SPLITS.items():
        lines = ["\t".join(COMMONVOICE_COLUMNS)]
        utterances = _read_transcripts(os.path.join(librispeech_root, split_folder))
        for utterance_id, (transcript, flac_file) in utterances.items():
            clip_index += 1
            clip = f"common_voice_{lang}_{clip_index:08d}.mp3"
            sentence = sentences.get(utterance_id) or _sentence_case(transcript)
            if clip_index % 2:
                sentence = sentence.replace("'", "\u2019")
            speaker = utterance_id.split("-")[0]
            row = {
                "client_id": hashlib.sha256(speaker.encode()).hexdigest(),
                "path": clip,
                "sentence_id": hashlib.sha256(sentence.encode()).hexdigest(),
                "sentence": sentence,
                "up_votes": "2",
                "down_votes": "0",
                "locale": lang,
            }
            lines.append("\t".join(row.get(key, "") for key in COMMONVOICE_COLUMNS))
            jobs.append((flac_file, os.path.join(clips_folder, clip), sample_rate))
        with open(
            os.path.join(language_folder, f"{split}.tsv"), "w", encoding="utf-8"
        ) as stream:
            stream.write("\n".join(lines) + "\n")

    # libsndfile releases the GIL while encoding, so threads are enough.
    with ThreadPoolExecutor(num_workers or _default_workers()) as executor:
        progress = tqdm(
            executor.map(_encode_clip, jobs),
            desc="Encoding mp3",
            total=len(jobs),
            unit="clip",
            disable=not show_progress,
        )
        list(progress)  # waits for all clips (and raises their errors)
    _write_json({"settings": settings, "complete": True}, manifest_file)
    return language_folder


def main(argv=None):
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Generate a tiny synthetic English corpus (LibriSpeech layout)."
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=1500, help="train utterances")
    parser.add_argument("--dev", type=int, default=100, help="dev utterances")
    parser.add_argument("--test", type=int, default=150, help="test utterances")
    parser.add_argument("--seed", type=int, default=1234, help="random seed")
    parser.add_argument("--workers", type=int, default=None, help="processes")
    parser.add_argument(
        "--commonvoice",
        action="store_true",
        help="also write a CommonVoice layout in <out>/CommonVoice/en",
    )
    parser.add_argument(
        "--unlabelled-hours",
        type=float,
        help="write the low-resource layout instead: this many hours of "
        "train-unlabelled, labelled subsets (--labelled-minutes), dev and test",
    )
    parser.add_argument(
        "--labelled-minutes", type=float, nargs="+", default=[5, 10, 60]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.unlabelled_hours:
        root = generate_lowresource_corpus(
            args.out,
            args.unlabelled_hours,
            args.labelled_minutes,
            args.dev,
            args.test,
            args.seed,
            args.workers,
        )
    else:
        root = generate_corpus(
            args.out, args.train, args.dev, args.test, args.seed, args.workers
        )
    print(f"LibriSpeech layout: {root}")
    if args.commonvoice:
        folder = make_commonvoice_layout(
            root, os.path.join(args.out, "CommonVoice"), num_workers=args.workers
        )
        print(f"CommonVoice layout: {folder}")


if __name__ == "__main__":
    main()
