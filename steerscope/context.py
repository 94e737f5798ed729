"""`ExperimentContext`: the model and the data an experiment runs on, resolved once by the runner.

The data is the model's default suite (`steerscope.organisms.suite_for`) with each kind the user
gave replaced by their records, asked the model's way. `provenance` is what results.json records:
where the model came from and, per data kind, its source, sha256, counts and the split sizes the
experiment used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerscope.cache import weights_digest
from steerscope.data.defaults import natural_suite
from steerscope.data.suite import DataSuite
from steerscope.data.user_data import UserData
from steerscope.data.vocabulary import record_texts, unknown_words
from steerscope.errors import InputError
from steerscope.model import Model
from steerscope.organisms import suite_for, world_of
from steerscope.provenance import environment, model_weights

MAX_UNKNOWN_SHOWN = 20


@dataclass
class ExperimentContext:
    """The loaded model, its data suite (defaults and the user's kinds) and their provenance."""

    model: Model
    data: DataSuite
    provenance: dict[str, Any]

    def used(self, kind: str, **sizes: int) -> None:
        """Record how many records (or windows) of each split of `kind` the experiment used."""
        self.provenance["data"].setdefault(kind, {"source": getattr(self.data, kind).source})["used"] = sizes

    def used_cached(self, kind: str, name: str, folder: Path, **details: Any) -> None:
        """Record a cached artefact the experiment computed with (e.g. an SAE): its
        folder, the content hash of its weights (`cache.weights_digest`) and `details` (the
        settings it was built with), under provenance["cached"][kind][name]."""
        entry = {"folder": folder.name, "weights_xxh3_128": weights_digest(folder), **details}
        self.provenance.setdefault("cached", {}).setdefault(kind, {})[name] = entry


def model_provenance(given: Any, model: Model) -> dict[str, Any]:
    """The model as given (a string, or the class of an object) and where it was loaded from."""
    if given is None or isinstance(given, (str, os.PathLike)):
        return {
            "given": None if given is None else str(given),
            "source": model.source,
            "weights": model_weights(model),
        }
    return {
        "given": f"<{type(given).__name__} object>",
        "class": type(given).__name__,
        "source": model.source,
        "weights": model_weights(model),
    }


def check_vocabulary(model: Model, user: UserData) -> None:
    """An organism reads only the words of its world: user data with other words is an error listing them."""
    missing = unknown_words(model.tokenizer, (t for r in user.records for t in record_texts(r)))
    if missing:
        shown = ", ".join(repr(w) for w in missing[:MAX_UNKNOWN_SHOWN])
        more = f" and {len(missing) - MAX_UNKNOWN_SHOWN} more" if len(missing) > MAX_UNKNOWN_SHOWN else ""
        raise InputError(
            f"{user.source}: {len(missing)} words are unknown to the tokenizer of {model.source}, which "
            f"reads only the words of its own world: {shown}{more}"
        )


def with_user_data(suite: DataSuite, user: Mapping[str, UserData]) -> DataSuite:
    """`suite` with each kind in `user` replaced by the user's records, asked the suite's way (the
    natural way where the suite has no data of that kind)."""
    natural = natural_suite() if any(getattr(suite, kind) is None for kind in user) else None
    replaced = {
        kind: (getattr(suite, kind) or getattr(natural, kind)).with_user(data) for kind, data in user.items()
    }
    return dataclasses.replace(suite, **replaced)


def build_context(
    given: Any, model: Model, user: Mapping[str, UserData], kinds: Iterable[str], lowered: Mapping[str, Any]
) -> ExperimentContext:
    """The context of an experiment taking `kinds`: checks an organism's vocabulary, merges the
    user's data into the model's default suite and starts the provenance."""
    if world_of(model) is not None:
        for data in user.values():
            check_vocabulary(model, data)
    suite = with_user_data(suite_for(model), user)
    data: dict[str, Any] = {}
    for kind in kinds:
        provider = getattr(suite, kind)
        if kind in user:
            data[kind] = user[kind].provenance()
        elif provider is not None:
            data[kind] = {"source": provider.source}
    provenance = {"model": model_provenance(given, model), "data": data, "environment": environment()}
    if lowered:
        provenance["settings_lowered_to_fit_data"] = dict(lowered)
    return ExperimentContext(model, suite, provenance)
