"""Model organisms: the training pipeline, the word tokenizer, and the ToM world's held-out split."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import steerscope as ss
from steerscope.errors import InputError
from steerscope.organisms import ORGANISMS, Shape, Training, organism_spec, suite_for
from steerscope.organisms import tom_world as world
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.organisms.train import batch_at, build_corpus, train_steps

SMALL = dataclasses.replace(
    organism_spec("tom"),
    name="tom-test",
    shape=Shape(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_mlp=64),
    training=Training(steps=60, batch_size=8, lr=3e-3, warmup=5, n_task=300, n_filler=60, checkpoint_every=3),
)


@pytest.fixture(scope="module")
def small_corpus():
    return build_corpus(SMALL)


def _loss(model, corpus) -> float:
    ids, mask, labels = batch_at(corpus, SMALL, 10**6)  # a batch no training step draws
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()


def test_training_a_few_steps_lowers_the_loss(small_corpus, tmp_path):
    untrained, _ = train_steps(SMALL, small_corpus, tmp_path / "a", until=0, progress=False)
    trained, state = train_steps(SMALL, small_corpus, tmp_path / "b", until=60, progress=False)
    assert state["step"] == 60
    assert _loss(trained, small_corpus) < 0.8 * _loss(untrained, small_corpus)


def test_a_resumed_run_matches_an_uninterrupted_one(small_corpus, tmp_path):
    straight, _ = train_steps(SMALL, small_corpus, tmp_path / "straight", until=6, progress=False)
    train_steps(SMALL, small_corpus, tmp_path / "resumed", until=3, progress=False)  # "killed" at 3
    resumed, state = train_steps(SMALL, small_corpus, tmp_path / "resumed", until=6, progress=False)
    assert state["step"] == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_recipe_is_ignored(small_corpus, tmp_path):
    train_steps(SMALL, small_corpus, tmp_path, until=3, progress=False)
    other = dataclasses.replace(SMALL, training=dataclasses.replace(SMALL.training, lr=1e-3))
    with pytest.warns(UserWarning, match="written for another recipe"):
        _, state = train_steps(other, small_corpus, tmp_path, until=0, progress=False)
    assert state["step"] == 0


def test_the_recipe_hash_names_the_cache_folder():
    changed = dataclasses.replace(SMALL, training=dataclasses.replace(SMALL.training, seed=1))
    assert changed.folder() != SMALL.folder()
    assert SMALL.folder() == dataclasses.replace(SMALL).folder()


def test_unknown_organisms_list_the_known_ones():
    with pytest.raises(InputError, match="organism:tom"):
        ss.load("organism:telepathy")


def test_word_tokenizer_gives_a_word_one_id_alone_and_in_context():
    tokenizer = word_tokenizer(["Anna puts the ball in the basket.\nWhere is it? basket"])
    story = tokenizer("Anna puts the ball in the").input_ids
    whole = tokenizer("Anna puts the ball in the basket").input_ids
    assert whole == story + tokenizer(" basket", add_special_tokens=False).input_ids
    assert tokenizer.decode(whole, skip_special_tokens=True) == "Anna puts the ball in the basket"
    assert tokenizer.unk_token_id not in tokenizer("Where is the basket?\nbasket").input_ids


def _mentions(text: str, words: tuple[str, ...]) -> set[str]:
    return {w for w in words if re.search(rf"\b{w}\b", text)}


def test_tom_training_stories_never_use_held_out_entities():
    held_out = tuple(w for _, eval_words in world.ENTITIES.values() for w in eval_words)
    training = " ".join(world.training_texts(3000, seed=0))
    assert not _mentions(training, held_out)


def test_tom_eval_items_use_only_held_out_entities_and_fisher_items_only_training_ones():
    for split, part in (("eval", 1), ("fisher", 0)):
        allowed = {w for words in world.ENTITIES.values() for w in words[part]}
        everyone = tuple(w for words in world.ENTITIES.values() for w in words[0] + words[1])
        for item in world.tom_items(split, 200, seed=3):
            assert _mentions(item.story, everyone) <= allowed


def test_tom_items_are_balanced_and_deterministic():
    items = world.tom_items("eval", 80, seed=1)
    assert items == world.tom_items("eval", 80, seed=1)
    assert sum(i.false_belief for i in items) == 40
    assert {i.kind for i in items} == {"unexpected_transfer", "unexpected_contents"}
    # False and true belief stories differ only in the order of the same sentences.
    for item in items:
        assert item.correct != item.foil and item.foil.strip() in item.story


def test_every_organism_names_an_existing_world():
    for spec in ORGANISMS.values():
        module = spec.world_module()
        assert {"people", "things", "places"} <= set(module.LEXICON)


def test_tom_organism_tracks_false_and_true_belief_on_held_out_stories(tom_organism):
    from steerscope.probes.tom_eval import tom_scores

    items = suite_for(tom_organism).tom.items("eval", 200, 0)
    scores = tom_scores(tom_organism, items, greedy=False)
    assert scores["fb_acc"] >= 0.9 and scores["tb_acc"] >= 0.9, scores


def test_tom_organism_is_a_supported_model_with_its_own_suite(tom_organism):
    assert tom_organism.anatomy.family.name == "llama"
    assert suite_for(tom_organism).name == "organism:tom"
    assert suite_for(tom_organism).conflicts is None
