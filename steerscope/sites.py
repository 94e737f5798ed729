"""Sites: values that name one place in the forward pass, with a short string form.

`"L9.resid_post"` is the residual stream after decoder layer 9; `"L3.q_rope.h2"` is head 2 of
the queries of layer 3 after RoPE. Every probe and steering method names places this way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steerscope.anatomy import Anatomy
from steerscope.errors import InputError

#: Site kinds and what they hold, in forward order within a layer.
SITE_KINDS: dict[str, str] = {
    "resid_pre": "residual stream entering the layer [batch, pos, d_model]",
    "q": "queries before RoPE [batch, pos, head, head_dim]",
    "k": "keys before RoPE [batch, pos, kv_head, head_dim]",
    "v": "values [batch, pos, kv_head, head_dim]",
    "q_rope": "queries after RoPE [batch, pos, head, head_dim]",
    "k_rope": "keys after RoPE [batch, pos, kv_head, head_dim]",
    "attn_pattern": "attention probabilities, read-only [batch, head, query_pos, key_pos]",
    "attn_out": "attention branch output added to the residual [batch, pos, d_model]",
    "mlp_out": "MLP branch output added to the residual [batch, pos, d_model]",
    "resid_post": "residual stream leaving the layer [batch, pos, d_model]",
}
HEADED_KINDS = frozenset({"q", "k", "v", "q_rope", "k_rope", "attn_pattern"})
KV_KINDS = frozenset({"k", "v", "k_rope"})

_SITE_PATTERN = re.compile(r"^L(?P<layer>\d+)\.(?P<kind>[a-z_]+)(?:\.h(?P<head>\d+))?$")


@dataclass(frozen=True, order=True)
class Site:
    """One place in the forward pass: a layer, a kind from `SITE_KINDS`, optionally a head."""

    layer: int
    kind: str
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise InputError(f"unknown site kind {self.kind!r}; valid kinds: {', '.join(SITE_KINDS)}")
        if self.head is not None and self.kind not in HEADED_KINDS:
            raise InputError(
                f"site kind {self.kind!r} has no heads; per-head kinds: {', '.join(sorted(HEADED_KINDS))}"
            )
        if self.layer < 0 or (self.head is not None and self.head < 0):
            raise InputError(f"layer and head must be non-negative, got {self}")

    def __str__(self) -> str:
        head = f".h{self.head}" if self.head is not None else ""
        return f"L{self.layer}.{self.kind}{head}"

    @classmethod
    def parse(cls, text: str | Site) -> Site:
        """Read the string form, e.g. `"L9.resid_post"` or `"L3.k_rope.h0"`."""
        if isinstance(text, Site):
            return text
        match = _SITE_PATTERN.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InputError(
                f"bad site {text!r}; the form is 'L<layer>.<kind>[.h<head>]', e.g. 'L9.resid_post' "
                f"or 'L3.q_rope.h2', with kind one of: {', '.join(SITE_KINDS)}"
            )
        head = match["head"]
        return cls(int(match["layer"]), match["kind"], int(head) if head is not None else None)

    def validate(self, anatomy: Anatomy) -> Site:
        """Check the site exists in a model; the error lists what does."""
        if self.layer >= anatomy.n_layers:
            raise InputError(
                f"site {self}: layer {self.layer} out of range; this model has layers "
                f"0-{anatomy.n_layers - 1} (valid sites: {site_summary(anatomy)})"
            )
        if self.head is not None:
            n = anatomy.n_kv_heads if self.kind in KV_KINDS else anatomy.n_heads
            if self.head >= n:
                what = "KV heads" if self.kind in KV_KINDS else "query heads"
                raise InputError(
                    f"site {self}: head {self.head} out of range; this model has {n} {what} "
                    f"(h0-h{n - 1}) for {self.kind}"
                )
        return self


def site_summary(anatomy: Anatomy) -> str:
    """A one-line description of every valid site of a model, for error messages."""
    return (
        f"L0-L{anatomy.n_layers - 1} x {{{', '.join(SITE_KINDS)}}}, "
        f"query heads h0-h{anatomy.n_heads - 1}, KV heads h0-h{anatomy.n_kv_heads - 1}"
    )


def all_sites(anatomy: Anatomy, kinds: tuple[str, ...] = tuple(SITE_KINDS)) -> list[Site]:
    """Every whole-layer site of the given kinds, in forward order."""
    return [Site(layer, kind) for layer in range(anatomy.n_layers) for kind in kinds]


def resolve_sites(sites: object, anatomy: Anatomy) -> list[Site]:
    """Parse and validate a site, a string, or a sequence of them."""
    if isinstance(sites, (str, Site)):
        sites = [sites]
    return [Site.parse(s).validate(anatomy) for s in sites]  # type: ignore[union-attr]
