"""The SAEs an experiment reads: the settings it declares (`SAESettings`, the names and defaults
`spare` declares), built or loaded from the cache by `train_saes` on the data suite's
`training_texts`, and recorded in the run's provenance. Two experiments with the same settings on
the same model and data read the same cached SAEs (the cache key is model, site, settings, texts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from steerscope.settings import Count, Range
from steerscope.sites import Site
from steerscope.steering.sae import (
    Positions,
    SAETrainSettings,
    TrainedSAE,
    texts_digest,
    train_saes,
    training_texts,
    training_windows,
)

if TYPE_CHECKING:
    from steerscope.context import ExperimentContext


@dataclass
class SAESettings:
    """Experiment settings for the SAEs it trains (as `steerscope build sae:SITE` with
    `SAETrainSettings`): the defaults are the 1.1M-token SAEs of docs/results.md."""

    sae_k: Count | None = None  # None: a tenth of d_model
    sae_expansion: Count = 8
    sae_max_tokens: Count | None = 1_100_000  # SAE training tokens (as `steerscope build sae:`)
    sae_epochs: Annotated[float, Range(0, low_open=True)] = 1.0
    sae_batch_size: Count = 2048
    # all: every token of every window; last: the last token of each text (each prompt's last
    # token, where SpARE reads and edits; needs sae_batch_size below the number of texts)
    sae_positions: Positions = "all"

    def sae_train_settings(self, seed: int) -> SAETrainSettings:
        """These settings as `train_saes` takes them."""
        return SAETrainSettings(
            expansion=self.sae_expansion,
            k=self.sae_k,
            max_tokens=self.sae_max_tokens,
            epochs=self.sae_epochs,
            batch_size=self.sae_batch_size,
            seed=seed,
            positions=self.sae_positions,
        )


def experiment_saes(
    context: ExperimentContext, sites: Sequence[str | Site], settings: SAETrainSettings, demos: int
) -> dict[str, TrainedSAE]:
    """SAEs by site for an experiment's model, trained on `training_texts(context.data, demos)`
    (the prompts alone for an SAE of last tokens) where the cache lacks them; each is recorded in
    the provenance (folder, weights hash, settings, texts hash, built or reused) and the training
    windows under the `text` data."""
    texts = training_texts(context.data, demos, documents=settings.positions == "all")
    trained = train_saes(context.model, sites, settings, texts)
    first = next(iter(trained.values()))
    context.used("text", sae_train_windows=first.report["train_windows"])
    for site, sae in trained.items():
        context.used_cached(
            "sae",
            site,
            sae.folder,
            settings=sae.report["settings"],
            texts_sha256=texts_digest(texts),
            n_texts=len(texts),
            train_tokens=sae.report["train_tokens"],
            built_by_this_run=sae.built,
        )
    return trained


def check_last_token_saes(context: ExperimentContext, settings: SAETrainSettings, demos: int) -> None:
    """Before an experiment's expensive phases: SAEs of last prompt tokens (`positions="last"`)
    need more training prompts than a batch (`training_windows` raises otherwise); SAEs of every
    position train on a million tokens of text and need no such check."""
    if settings.positions == "last":
        training_windows(context.model, training_texts(context.data, demos, documents=False), settings)
