"""Specification of the offline generic-text windows (steerscope.data.generic)."""

from __future__ import annotations

import pytest

from steerscope.data.generic import PARAGRAPHS, generic_documents, generic_windows
from steerscope.errors import InputError


def test_offline_corpus_always_includes_the_steerscope_paragraphs() -> None:
    names = [name for name, _ in generic_documents("offline")]
    assert names[0] == "steerscope paragraphs"
    assert len(PARAGRAPHS) >= 30 and 3000 <= sum(len(p.split()) for p in PARAGRAPHS) <= 4500


def test_windows_are_exactly_the_requested_length(gemma) -> None:
    for window in (128, 64):
        windows = generic_windows(gemma.tokenizer, 50, window=window)
        assert len(windows) == 50 and all(len(ids) == window for ids in windows)


def test_windows_are_deterministic_by_seed(gemma) -> None:
    assert generic_windows(gemma.tokenizer, 20, seed=1) == generic_windows(gemma.tokenizer, 20, seed=1)
    assert generic_windows(gemma.tokenizer, 20, seed=1) != generic_windows(gemma.tokenizer, 20, seed=2)


def test_fisher_and_eval_windows_are_disjoint(gemma) -> None:
    fisher = {tuple(ids) for ids in generic_windows(gemma.tokenizer, 400, split="fisher")}
    evaluation = {tuple(ids) for ids in generic_windows(gemma.tokenizer, 400, split="eval")}
    assert len(fisher) == len(evaluation) == 400
    assert not fisher & evaluation


def test_bos_window_starts_with_bos_and_keeps_the_length(gemma) -> None:
    windows = generic_windows(gemma, 5, bos=True)  # a Model is accepted for its tokenizer
    assert all(len(ids) == 128 and ids[0] == gemma.tokenizer.bos_token_id for ids in windows)


def test_steerscope_source_works_alone_and_reports_its_size(gemma) -> None:
    windows = generic_windows(gemma.tokenizer, 8, source="steerscope", split="eval")
    assert len(windows) == 8 and all(len(ids) == 128 for ids in windows)
    text = "\n\n".join(PARAGRAPHS)
    assert all(gemma.tokenizer.decode(ids)[5:-5] in text for ids in windows)
    with pytest.raises(InputError, match="windows of 128 tokens, asked for 10000"):
        generic_windows(gemma.tokenizer, 10000, source="steerscope")


def test_bad_arguments_name_the_valid_choices(gemma) -> None:
    with pytest.raises(InputError, match="fisher"):
        generic_windows(gemma.tokenizer, 1, split="test")
    with pytest.raises(InputError, match="offline"):
        generic_windows(gemma.tokenizer, 1, source="wikipedia")


def test_hf_source_fails_clearly_when_offline(gemma, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="offline|datasets"):
        generic_windows(gemma.tokenizer, 1, source="hf:wikitext:wikitext-2-raw-v1")
