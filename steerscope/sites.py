"""Sites: values that name one place in the forward pass, with a short string form.

`"L9.resid_post"` is the residual stream after decoder layer 9; `"L3.q_rope.h2"` is head 2 of
the queries of layer 3 after RoPE. Every probe and steering method names places this way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from steerscope.anatomy import Anatomy
from steerscope.errors import InputError

#: Where a hook reads a site kind: "input" is the hooked module's first input (a forward pre-hook),
#: "output" its first output, "probabilities" the attention weights an attention module returns.
HookPoint = Literal["input", "output", "probabilities"]


@dataclass(frozen=True)
class SiteKind:
    """What one site kind means, for everything that reads or edits it (capture, intervene, the
    TransformerLens bridge, the steering bank): what it holds, its shape, where it is hooked and
    whether an edit may change it. TransformerLens keeps the same one table of hook names."""

    holds: str
    shape: str
    #: The `Family` field naming the hooked module inside a layer; None: the decoder layer itself.
    module: str | None
    hook: HookPoint
    #: TransformerLens' HookPoint inside `blocks.{layer}` holding the same activation.
    transformer_lens: str
    #: How the hooked output lays out heads: "flat" [batch, pos, heads * head_dim], "family" the
    #: family's `qk_layout` (see `steerscope.architectures`); None: as the site holds it.
    head_layout: Literal["flat", "family"] | None = None
    #: The activation's head axis (a `.h<head>` site selects it); None: no heads.
    head_axis: int | None = None
    #: The activation's axis over (query) positions, and whether its last axis runs over keys.
    position_axis: int = 1
    key_axis_last: bool = False
    kv_heads: bool = False
    rotated: bool = False
    editable: bool = True

    def query_axis(self, headed: bool) -> int:
        """The (query) position axis of a site's activation, with its head selected or not."""
        before = headed and self.head_axis is not None and self.head_axis < self.position_axis
        return self.position_axis - 1 if before else self.position_axis


#: The shape of the residual stream and of what the attention and MLP branches add to it.
D_MODEL_SHAPE = "[batch, pos, d_model]"
_HEADS = "[batch, pos, head, head_dim]"
_KV_HEADS = "[batch, pos, kv_head, head_dim]"

#: Site kinds in forward order within a layer, and what each means.
SITE_KINDS: dict[str, SiteKind] = {
    "resid_pre": SiteKind(
        "residual stream entering the layer", D_MODEL_SHAPE, module=None, hook="input",
        transformer_lens="hook_resid_pre",
    ),
    "q": SiteKind(
        "queries before RoPE", _HEADS, module="q_pre_rope", hook="output",
        transformer_lens="attn.hook_q", head_layout="family", head_axis=2,
    ),
    "k": SiteKind(
        "keys before RoPE", _KV_HEADS, module="k_pre_rope", hook="output",
        transformer_lens="attn.hook_k", head_layout="family", head_axis=2, kv_heads=True,
    ),
    "v": SiteKind(
        "values", _KV_HEADS, module="v", hook="output",
        transformer_lens="attn.hook_v", head_layout="flat", head_axis=2, kv_heads=True,
    ),
    "q_rope": SiteKind(
        "queries after RoPE", _HEADS, module="q_pre_rope", hook="output",
        transformer_lens="attn.hook_rot_q", head_layout="family", head_axis=2, rotated=True,
    ),
    "k_rope": SiteKind(
        "keys after RoPE", _KV_HEADS, module="k_pre_rope", hook="output",
        transformer_lens="attn.hook_rot_k", head_layout="family", head_axis=2, kv_heads=True, rotated=True,
    ),
    "attn_pattern": SiteKind(
        "attention probabilities, read-only", "[batch, head, query_pos, key_pos]", module="attention",
        hook="probabilities", transformer_lens="attn.hook_pattern", head_axis=1, position_axis=2,
        key_axis_last=True, editable=False,
    ),
    "attn_out": SiteKind(
        "attention branch output added to the residual", D_MODEL_SHAPE, module="attn_out", hook="output",
        transformer_lens="hook_attn_out",
    ),
    "mlp_out": SiteKind(
        "MLP branch output added to the residual", D_MODEL_SHAPE, module="mlp_out", hook="output",
        transformer_lens="hook_mlp_out",
    ),
    "resid_post": SiteKind(
        "residual stream leaving the layer", D_MODEL_SHAPE, module=None, hook="output",
        transformer_lens="hook_resid_post",
    ),
}  # fmt: skip
HEADED_KINDS = frozenset(name for name, kind in SITE_KINDS.items() if kind.head_axis is not None)
KV_KINDS = frozenset(name for name, kind in SITE_KINDS.items() if kind.kv_heads)

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


def module_path(site: Site, anatomy: Anatomy) -> str:
    """Dotted path of the module whose hook reads `site` (see `SiteKind.module` and `.hook`)."""
    field = SITE_KINDS[site.kind].module
    if field is None:
        return anatomy.layer_path(site.layer)
    return anatomy.component_path(site.layer, getattr(anatomy.family, field))


def all_sites(anatomy: Anatomy, kinds: tuple[str, ...] = tuple(SITE_KINDS)) -> list[Site]:
    """Every whole-layer site of the given kinds, in forward order."""
    return [Site(layer, kind) for layer in range(anatomy.n_layers) for kind in kinds]


def resolve_sites(sites: object, anatomy: Anatomy) -> list[Site]:
    """Parse and validate a site, a string, or a sequence of them."""
    if isinstance(sites, (str, Site)):
        sites = [sites]
    return [Site.parse(s).validate(anatomy) for s in sites]  # type: ignore[union-attr]
