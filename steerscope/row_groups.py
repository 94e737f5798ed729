"""Several edit settings as rows of one batch: a dev grid of edits (SpARE's alphas and feature
sets, difference-of-means strengths) run in one `generate` call instead of one call per setting.

The batch holds each prompt once per setting, interleaved: row i * n_settings + k is prompt i
under setting k (`CachedPrompts.inputs(index, repeats=n_settings)` lays it out). At every site
some setting edits, the installed edit hands setting k's edit the rows k, k + n_settings, ... and
their `TokenInfo` (`TokenInfo.rows`), so each setting's edit sees the rows and tokens it would see
alone, in the same order, and the other rows pass through untouched. A decoding step's fixed cost
(reading the weights, the 262k-token unembedding of Gemma 3, the Python around the forward) is
then paid once for all settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from steerscope.errors import InputError
from steerscope.intervene import Edit, result_checked, run_edits
from steerscope.sites import Site
from steerscope.tokens import TokenInfo


def interleaved_edits(settings: Sequence[Mapping[str, Edit]]) -> dict[str, Edit]:
    """{site: edit} applying `settings[k]`'s edit at that site to the batch rows k, k + n, k + 2n,
    ... (n = len(settings)); a setting without an edit at a site leaves its rows alone there."""
    n = len(settings)
    by_site: dict[str, list[tuple[int, Edit]]] = {}
    for k, edits in enumerate(settings):
        for site, edit in edits.items():
            by_site.setdefault(str(site), []).append((k, edit))
    return {site: _group_edit(Site.parse(site), members, n) for site, members in by_site.items()}


def _group_edit(site: Site, members: list[tuple[int, Edit]], n: int) -> Edit:
    """The edit at one site running each member's edit on its own rows (checked as `intervene`
    checks an edit's result)."""

    def edit(act: Tensor, tokens: TokenInfo) -> Tensor | None:
        if act.shape[0] % n:
            raise InputError(f"a batch of {act.shape[0]} rows does not hold {n} settings per prompt")
        out = None
        for k, member in members:
            rows = slice(k, None, n)
            part = act[rows]
            new = run_edits(
                site, part, [member], tokens.once(("rows", k, n), lambda t, rows=rows: t.rows(rows))
            )
            if new is not part:
                if out is None:
                    out = act.clone()
                out[rows] = new
        return out

    return result_checked(edit)
