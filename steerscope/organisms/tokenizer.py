"""A word-level tokenizer for model organisms, trained on the organism's own corpus.

Every word is one token carrying its leading space (" basket"), as is every punctuation mark and
newline. A space is put in front of every word that lacks one (the first word of a text, a word
after a newline or a bracket), so a word has one id wherever it appears and a continuation such
as " basket" tokenizes the same alone as after its prompt. Decoding gives the text back (up to
that inserted space after an opening bracket).

Markup tags (`<think>`, `</think>`) that occur in the corpus are single tokens without a space,
split off before anything else, as in real reasoning models: `steering.generation` counts thinking
tokens only when `</think>` is one token. A corpus without them gets exactly the vocabulary it got
before tags existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from steerscope.tiny import SPECIAL_TOKENS, with_bos_and_left_padding

_PIECE = r"\n| ?\w+| ?[^\s\w]"
MARKUP = ("<think>", "</think>")
_MARKUP_SPLIT = re.compile("|".join(re.escape(tag) for tag in MARKUP))


def _segments(texts: Iterable[str]) -> Iterator[str]:
    """The texts cut at markup tags, as the tokenizer sees them (tags are split off first)."""
    for text in texts:
        yield from (piece for piece in _MARKUP_SPLIT.split(text) if piece)


def word_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every piece of `corpus` (ids in first-seen
    frequency order from `tokenizers`' trainer), then each markup tag the corpus uses, with <bos>
    prepended and left padding."""
    texts = list(corpus)
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"\n(?=\S)"), "\n "),
            normalizers.Replace(Regex(r"(?<=[^\s\w])(?=\w)"), " "),
            normalizers.Prepend(" "),
            normalizers.Replace(Regex(" {2,}"), " "),
            # A text (or a piece after a tag) that starts with a newline got a space before it.
            normalizers.Replace(Regex(" \n"), "\n"),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE), behavior="isolated")
    backend.decoder = decoders.Sequence(
        [decoders.Fuse(), decoders.Replace("\n ", "\n"), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    backend.train_from_iterator(_segments(texts), trainer)
    used = [tag for tag in MARKUP if any(tag in text for text in texts)]
    backend.add_tokens([AddedToken(tag, normalized=False, single_word=False) for tag in used])
    return with_bos_and_left_padding(backend)
