"""Tokenizers for random-weight AudioLDM2 pipelines, built locally without the Hugging Face Hub.

The real checkpoint ships a RoBERTa byte-level BPE tokenizer (CLAP) and a Flan-T5 Unigram tokenizer.
The tiny and bench pipelines get small tokenizers of the same kinds, built here from a fixed caption
corpus so that every build gives byte-identical `tokenizer.json` files:

- CLAP: byte-level BPE trained with `tokenizers`' `BpeTrainer` (deterministic for a fixed corpus),
  wrapped in transformers' `RobertaTokenizer`, which adds the RoBERTa post-processor.
- T5: a Unigram vocabulary written directly (single characters plus whole corpus words, scored by
  log-frequency), wrapped in transformers' `T5Tokenizer`, which adds the Metaspace pre-tokenizer and
  the `$A </s>` template. Characters outside ASCII and the corpus map to `<unk>`, as emoji do in
  Flan-T5.
"""

from __future__ import annotations

import collections
import json
import math
import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import RobertaTokenizer, T5Tokenizer

# Audio-caption-like sentences; only their statistics matter (merges, word pieces).
CORPUS = (
    "A hammer hitting a wooden surface",
    "A dog barking in the distance while birds sing",
    "Rain falling on a tin roof during a thunderstorm",
    "Techno music with a strong upbeat tempo and high melodic riffs",
    "A man speaking softly in a quiet room",
    "A woman laughing and a baby crying",
    "Water running from a faucet into a metal sink",
    "A car engine starting and revving loudly",
    "Footsteps on gravel followed by a door closing",
    "Birds chirping in a forest in the early morning",
    "An orchestra playing a slow and calm melody",
    "A cat meowing and purring near the window",
    "Wind blowing through the trees on a cold night",
    "Waves crashing on the beach with seagulls calling",
    "A train passing by with its horn blowing",
    "People talking and dishes clattering in a busy cafe",
    "A piano playing a sad song with soft strings",
    "Drums and electric guitar in a loud rock song",
    "A clock ticking and a bell ringing at noon",
    "Fire crackling in a fireplace while rain falls outside",
    "An airplane flying overhead and a helicopter hovering",
    "A crowd cheering and clapping at a stadium",
    "Typing on a keyboard and clicking a mouse",
    "A violin playing a high note over a low cello",
    "Thunder rumbling and heavy rain pouring down",
    "A small bell and a wooden flute in a quiet temple",
    "The sound of coffee brewing and cups clinking",
    "A motorcycle accelerating on a wet road",
    "Frogs croaking and insects buzzing at night",
    "A child singing a happy song with a guitar",
    "Café music with an accordion, a soft voice and rain",
    "Noise, hum, static; low quality, distorted audio!",
    "Ambient synth pads with slow reverb and deep bass",
    "Jazz saxophone solo with brushed drums and upright bass",
    "Glass breaking and an alarm beeping",
    "A sheep bleating and a cow mooing on a farm",
    "Sirens wailing as an ambulance drives past",
    "Bubbles popping in boiling water",
    "Paper crumpling and scissors cutting",
    "A dog, a cat, and a bird: all at once?",
    "Crème brûlée, naïve façade, piñata, über, smörgåsbord",
    "1 2 3 4 5 6 7 8 9 10 beats per minute",
)

CLAP_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's ids 0..3, then <mask>
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2


def build_clap_tokenizer(vocab_size: int, model_max_length: int) -> RobertaTokenizer:
    """Byte-level BPE with RoBERTa specials (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CLAP_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    vocab = bpe.get_vocab()
    # The trained model serialises its merges as [left, right] pairs; BPE wants tuples.
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _unigram_vocab(max_words: int, corpus: tuple[str, ...] = CORPUS) -> list[tuple[str, float]]:
    """T5-style Unigram pieces: specials, `▁`, every corpus character, then the most frequent words."""
    words = collections.Counter(w for line in corpus for w in line.split())
    chars = collections.Counter(c for line in corpus for c in line if not c.isspace())
    # Every printable ASCII character gets a piece (count 1 if unseen), so only characters outside
    # ASCII and the corpus (emoji, CJK, rare accents) become <unk>.
    chars.update(c for c in string.printable if not c.isspace() and c not in chars)
    total = sum(words.values()) + sum(chars.values())
    pieces: list[tuple[str, float]] = [(s, 0.0) for s in T5_SPECIALS]
    pieces.append(("▁", math.log(len(corpus) / total)))
    # Sorting by (-count, text) keeps the order, and so the ids, independent of hash seeds.
    for char, count in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        pieces.append((char, math.log(count / total) - 2.0))
    for word, count in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:max_words]:
        pieces.append(("▁" + word, math.log(count / total)))
    return pieces


def build_t5_tokenizer(max_words: int, model_max_length: int, corpus: tuple[str, ...] = CORPUS) -> T5Tokenizer:
    """Unigram tokenizer with T5's specials (`<pad>`=0, `</s>`=1, `<unk>`=2) and no sentinel ids.

    `corpus` decides the word pieces; other families pass captions of their own domain.
    """
    return T5Tokenizer(vocab=_unigram_vocab(max_words, corpus), extra_ids=0, model_max_length=model_max_length)
