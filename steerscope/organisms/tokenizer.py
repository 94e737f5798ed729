"""A word-level tokenizer for model organisms, trained on the organism's own corpus.

Every word is one token carrying its leading space (" basket"), as is every punctuation mark and
newline. A space is put in front of every word that lacks one (the first word of a text, a word
after a newline or a bracket), so a word has one id wherever it appears and a continuation such
as " basket" tokenizes the same alone as after its prompt. Decoding gives the text back (up to
that inserted space after an opening bracket).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from steerscope.tiny import SPECIAL_TOKENS, with_bos_and_left_padding

_PIECE = r"\n| ?\w+| ?[^\s\w]"


def word_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is every piece of `corpus` (ids in first-seen
    frequency order from `tokenizers`' trainer), with <bos> prepended and left padding."""
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"\n(?=\S)"), "\n "),
            normalizers.Replace(Regex(r"(?<=[^\s\w])(?=\w)"), " "),
            normalizers.Prepend(" "),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE), behavior="isolated")
    backend.decoder = decoders.Sequence(
        [decoders.Fuse(), decoders.Replace("\n ", "\n"), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    backend.train_from_iterator(corpus, trainer)
    return with_bos_and_left_padding(backend)
