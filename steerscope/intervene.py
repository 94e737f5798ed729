"""Intervene: install edits at sites for the duration of any forward or `generate()` call.

An edit is a function `edit(activation, tokens) -> new activation | None` (None: unchanged).
It runs as a plain PyTorch hook on the model's own modules, so it works inside HF `generate`,
nnsight traces and TransformerLens' TransformerBridge alike. Hooks are removed on exit, on
exceptions too; nested blocks compose (outer edits run first). A pre-hook on the decoder makes
one `TokenInfo` per forward call, which every hook of the block shares (only when some edit reads
it: see `ignores_tokens`).

Edits are Python run at every call, which a compiled graph would never call (see
`steerscope.compiled`): for the block, the decoder's forward is wrapped so that a compiled caller
(`torch.compile` of the model or of its forward, transformers' compiled decoding) runs the decoder
eagerly, edits included, and exactly. A compiled module inside the decoder is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from steerscope.anatomy import Anatomy
from steerscope.compiled import compiled_modules, leaves_graph, unwrap_forward, wrap_forward
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model, uncompiled
from steerscope.rotary import rotate, unrotate
from steerscope.sites import SITE_KINDS, Site, SiteKind, module_path
from steerscope.tokens import TokenInfo, TokenTracker, past_length, position_ids_of

Edit = Callable[[Tensor, TokenInfo], Tensor | None]
E = TypeVar("E", bound=Edit)
EditSpec = Mapping["str | Site", "Edit | Sequence[Edit]"]


def module_at(root: nn.Module, path: str) -> nn.Module:
    """The module at a dotted path, stepping through wrappers that keep the original module as
    `_original_component` (TransformerLens' TransformerBridge swaps such wrappers in place), and
    from `torch.compile(model)` to the model."""
    module = uncompiled(root)
    for name in path.split("."):
        child = module._modules.get(name)
        inner = module._modules.get("_original_component")
        if child is None and inner is not None:
            child = inner._modules.get(name)
        if child is None:
            raise AttributeError(f"{type(root).__name__} has no module at {path!r} (stopped at {name!r})")
        module = child
    return module


def _to_bshd(raw: Tensor, layout: str, head_dim: int) -> Tensor:
    """View a projection output as [batch, pos, head, head_dim]."""
    if layout == "flat":
        return raw.view(*raw.shape[:-1], -1, head_dim)
    if layout == "bhsd":
        return raw.transpose(1, 2)
    return raw


def _from_bshd(act: Tensor, layout: str) -> Tensor:
    if layout == "flat":
        return act.reshape(*act.shape[:-2], -1)
    if layout == "bhsd":
        return act.transpose(1, 2)
    return act


class _Rotary:
    """Holds the (cos, sin) a decoder layer received in the current forward call."""

    def __init__(self) -> None:
        self.cos_sin: tuple[Tensor, Tensor] | None = None

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.cos_sin = kwargs.get("position_embeddings")
        if self.cos_sin is None and len(args) > 1:
            self.cos_sin = args[1]

    def get(self, site: Site, device: torch.device) -> tuple[Tensor, Tensor]:
        """(cos, sin) on `device` (a sharded layer may get them from the previous one's device)."""
        if self.cos_sin is None:
            raise RuntimeError(f"site {site}: the layer received no rotary embedding this call")
        cos, sin = self.cos_sin
        return cos.to(device), sin.to(device)


def _described(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor {tuple(value.shape)} {value.dtype} on {value.device}"
    return f"a {type(value).__name__}"


def result_checked(edit: E) -> E:
    """Mark `edit` as returning None or a tensor of its input's shape, dtype and device by
    construction, so `run_edits` skips checking each result (about a microsecond per layer per
    decode step). For steerscope's own edits, whose tests prove it; any other edit is checked."""
    setattr(edit, _RESULT_CHECKED, True)
    return edit


def ignores_tokens(edit: E) -> E:
    """Mark `edit` as never reading its `TokenInfo` (it then receives None): a block whose edits
    all ignore tokens installs no per-call token tracking, which costs a few microseconds per
    decode step (e.g. a steering vector added at every token)."""
    setattr(edit, _IGNORES_TOKENS, True)
    return edit


_RESULT_CHECKED = "_steerscope_result_checked"
_IGNORES_TOKENS = "_steerscope_ignores_tokens"


def needs_result_check(edits: Sequence[Edit]) -> bool:
    """Whether some edit's result must be checked (it is not marked by `result_checked`)."""
    return not all(getattr(edit, _RESULT_CHECKED, False) for edit in edits)


def needs_tokens(edits: Sequence[Edit]) -> bool:
    """Whether some edit reads its `TokenInfo` (it is not marked by `ignores_tokens`)."""
    return not all(getattr(edit, _IGNORES_TOKENS, False) for edit in edits)


def run_edits(
    site: Site, act: Tensor, edits: Sequence[Edit], tokens: TokenInfo | None, check: bool = True
) -> Tensor:
    """Apply edits in order; returns `act` itself (the same object) when none changed it.

    An edit must return None or a tensor of the activation's shape, dtype and device; anything
    else is an `InputError` naming the edit, the site, what it returned and what was expected
    (`check=False`: the edits are all `result_checked`).
    """
    new = act
    for edit in edits:
        result = edit(new, tokens)
        if result is None:
            continue
        if check and not (
            isinstance(result, Tensor)
            and result.shape == act.shape
            and result.dtype is act.dtype
            and result.device == act.device
        ):
            name = getattr(edit, "__qualname__", type(edit).__name__)
            raise InputError(
                f"edit {name} at {site} returned {_described(result)}; expected None or {_described(act)}"
            )
        new = result
    return new


def select_head(act: Tensor, site: Site, head_axis: int) -> Tensor:
    """The site's head of a per-head activation (all heads for whole-layer sites)."""
    return act if site.head is None else act.select(head_axis, site.head)


def merge_head(full: Tensor, new: Tensor, site: Site, head_axis: int) -> Tensor:
    """Write an edited head back into a copy of the full activation."""
    if site.head is None:
        return new
    merged = full.clone()
    merged.select(head_axis, site.head).copy_(new)
    return merged


TokensOf = Callable[[torch.device], TokenInfo]


class _DecoderCalls:
    """One `TokenInfo` per forward call of the decoder, shared by every hook of a block: observed by
    a pre-hook on the decoder, or by the wrapper that runs the decoder eagerly under a compiled
    caller (see the module docstring), which also observes the call when a compiler traces it."""

    def __init__(self, decoder: nn.Module, path: str) -> None:
        self.decoder, self.path = decoder, path
        self.tracker = TokenTracker()
        self._handle: RemovableHandle | None = None
        self._wrapper: Callable[..., Any] | None = None

    def tokens(self, device: torch.device) -> TokenInfo:
        """This forward call's token information, on `device` (made once per call and device)."""
        current = self.tracker.current
        if current is None:
            raise RuntimeError("steerscope saw no decoder call before a layer ran")
        return current.to(device)

    def observe(self, args: tuple, kwargs: dict) -> None:
        """Record one decoder call in the tracker (reads no tensor data; see TokenTracker.observe)."""
        input_ids = kwargs.get("input_ids")
        if input_ids is None and args:
            input_ids = args[0]
        shaped = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        if shaped is None:
            return  # neither ids nor embeddings: the model raises its own error
        batch, n_new = shaped.shape[0], shaped.shape[1]
        attention = kwargs.get("attention_mask")
        # none, or a ready 4-D mask (or one per layer type): padding is not read from it
        mask = attention if isinstance(attention, Tensor) and attention.dim() == 2 else None
        cache = kwargs.get("past_key_values")
        past = int(past_length(mask, n_new, cache))
        positions = None
        if mask is not None:
            device = mask.device
        else:
            device = shaped.device
            positions = position_ids_of(kwargs, batch, n_new)
            if positions is not None and positions.device != device:
                positions = positions.to(device)
        # a PromptPrefixCache (steerscope.prefix_cache, not imported: it needs transformers)
        continues_prompt = past > 0 and past == getattr(cache, "prefix_length", None)
        # ids are remembered only to recognise a cache-less continuation; with a cache, a call
        # with nothing cached always starts a sequence
        ids = input_ids if cache is None else None
        self.tracker.observe(ids, mask, n_new, batch, past, device, continues_prompt, positions)

    def attach(self, tracked: bool) -> None:
        """Wrap the decoder's forward so that a compiled caller runs it eagerly, refusing a compiled
        module inside the decoder (its stale graph would skip the hooks); `tracked`: also observe
        every call."""
        for name, child in self.decoder.named_children():
            inside = compiled_modules(child, f"model.hf.{self.path}.{name}")
            if inside:
                raise InputError(
                    f"{inside[0]} compiles a module inside the decoder, where intervene's Python edits "
                    "cannot run; compile the whole model instead (or steer through a steering bank: "
                    "steerscope.steering.install_steering_bank)"
                )
        self._wrapper = wrap_forward(self.decoder, leaves_graph(self.observe if tracked else None))
        if tracked:

            def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                # Once per forward call; while a compiler traces it, the wrapper observes instead.
                if not torch.compiler.is_compiling():
                    self.observe(args, kwargs)

            self._handle = self.decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._wrapper is not None:
            unwrap_forward(self.decoder, self._wrapper)
            self._wrapper = None


class _Installer:
    """Registers the hooks of one `intervene` block, each where `SITE_KINDS` says, and removes them."""

    def __init__(self, hf: nn.Module, anatomy: Anatomy, calls: _DecoderCalls) -> None:
        self.hf, self.anatomy, self.calls = hf, anatomy, calls
        self.handles: list[RemovableHandle] = []
        self._rotaries: dict[int, _Rotary] = {}

    def install(self, site: Site, edits: Sequence[Edit]) -> None:
        kind = SITE_KINDS[site.kind]
        module = module_at(self.hf, module_path(site, self.anatomy))
        tokens = self.calls.tokens if needs_tokens(edits) else None
        if kind.hook == "input":
            handle = module.register_forward_pre_hook(_input_hook(site, edits, tokens), with_kwargs=True)
        elif kind.hook == "probabilities":
            handle = module.register_forward_hook(_probabilities_hook(site, edits, tokens))
        else:
            view = self._head_view(site, kind) if kind.head_layout is not None else None
            handle = module.register_forward_hook(_output_hook(site, edits, tokens, view))
        self.handles.append(handle)

    def _head_view(self, site: Site, kind: SiteKind) -> _HeadView:
        layout = "flat" if kind.head_layout == "flat" else self.anatomy.family.qk_layout
        rotary = self._rotary(site.layer) if kind.rotated else None
        return _HeadView(site, layout, self.anatomy.head_dim, rotary)

    def _rotary(self, layer: int) -> _Rotary:
        """The (cos, sin) holder of a layer, its pre-hook registered once per block."""
        if layer not in self._rotaries:
            holder = _Rotary()
            module = module_at(self.hf, self.anatomy.layer_path(layer))
            self.handles.append(module.register_forward_pre_hook(holder.pre_hook, with_kwargs=True))
            self._rotaries[layer] = holder
        return self._rotaries[layer]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class _HeadView:
    """A projection's output seen as a per-head site: [batch, pos, head, head_dim] (one head for a
    `.h<head>` site), after RoPE for a rotated kind; `write` puts an edited activation back (for a
    rotated kind, the edit's change un-rotated and added to the projection's output)."""

    def __init__(self, site: Site, layout: str, head_dim: int, rotary: _Rotary | None) -> None:
        self.site, self.layout, self.head_dim, self.rotary = site, layout, head_dim, rotary
        self._state: dict[str, Tensor] = {}

    def read(self, raw: Tensor) -> Tensor:
        act = _to_bshd(raw, self.layout, self.head_dim)
        if self.rotary is not None:
            self._state["pre"] = act
            act = rotate(act, *self.rotary.get(self.site, act.device))
            self._state["rotated"] = act
        return select_head(act, self.site, head_axis=2)

    def write(self, raw: Tensor, new: Tensor) -> Tensor:
        if self.rotary is None:
            full = _to_bshd(raw, self.layout, self.head_dim)
            return _from_bshd(merge_head(full, new, self.site, 2), self.layout)
        rotated = self._state.pop("rotated")
        delta = merge_head(rotated, new, self.site, 2) - rotated
        unrotated = unrotate(delta, *self.rotary.get(self.site, delta.device))
        return _from_bshd(self._state.pop("pre") + unrotated, self.layout)


def _input_hook(site: Site, edits: Sequence[Edit], tokens: TokensOf | None) -> Callable[..., tuple | None]:
    """A forward pre-hook editing a layer's input hidden states."""
    check = needs_result_check(edits)

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
        from_kwargs = "hidden_states" in kwargs
        act = kwargs["hidden_states"] if from_kwargs else args[0]
        new = run_edits(site, act, edits, tokens(act.device) if tokens else None, check)
        if new is act:
            return None
        if from_kwargs:
            return args, {**kwargs, "hidden_states": new}
        return (new, *args[1:]), kwargs

    return pre_hook


def _output_hook(
    site: Site, edits: Sequence[Edit], tokens: TokensOf | None, view: _HeadView | None
) -> Callable[..., Any]:
    """A forward hook editing the module's (first) output, seen through `view` (as-is for None)."""
    check = needs_result_check(edits)
    only = edits[0] if len(edits) == 1 and not check else None  # called directly: no loop, no check

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        # Runs once per layer per decode step, where each Python step costs about as much as
        # a small tensor op: kept to the few it needs.
        in_tuple = isinstance(output, tuple)
        raw = output[0] if in_tuple else output
        act = raw if view is None else view.read(raw)
        call_tokens = tokens(raw.device) if tokens else None
        if only is not None:
            new = only(act, call_tokens)
            if new is None:
                return None
        else:
            new = run_edits(site, act, edits, call_tokens, check)
        if new is act:
            return None
        if view is not None:
            new = view.write(raw, new)
        return (new, *output[1:]) if in_tuple else new

    return hook


def _probabilities_hook(site: Site, edits: Sequence[Edit], tokens: TokensOf | None) -> Callable[..., None]:
    """A forward hook on an attention module showing its probabilities to `edits` (read-only)."""

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise InputError(
                f"site {site}: this attention implementation returns no probabilities; "
                "capture() switches to eager attention for attn_pattern sites, or call "
                "model.set_attn_implementation('eager') yourself"
            )
        act = select_head(weights, site, head_axis=1)  # [batch, head, query_pos, key_pos]
        new = run_edits(site, act, edits, tokens(weights.device) if tokens else None)
        if new is not act:
            raise InputError(f"site {site}: attn_pattern is read-only; edit q_rope or k_rope instead")

    return hook


def edit_list(value: Edit | Sequence[Edit]) -> list[Edit]:
    """One edit or a sequence of them, as a list; anything else is a TypeError."""
    if callable(value):
        return [value]
    edits = list(value)
    if not all(callable(e) for e in edits):
        raise InputError("an edit must be a callable edit(activation, tokens) or a list of them")
    return edits


@contextmanager
def intervene(model: ModelLike, edits: EditSpec) -> Iterator[None]:
    """Install `edits` ({site: edit or [edits]}) for the duration of the block.

    Example: `with intervene(model, {"L9.resid_post": add_vector}): model.generate(...)`.
    """
    loaded = as_model(model)
    plan: dict[Site, list[Edit]] = {}
    for key, value in edits.items():
        site = Site.parse(key).validate(loaded.anatomy)
        plan.setdefault(site, []).extend(edit_list(value))
    decoder_path = loaded.anatomy.family.decoder
    calls = _DecoderCalls(module_at(loaded.hf, decoder_path), decoder_path)
    installer = _Installer(loaded.hf, loaded.anatomy, calls)
    try:
        if plan:
            calls.attach(tracked=any(needs_tokens(site_edits) for site_edits in plan.values()))
        for site, site_edits in plan.items():
            installer.install(site, site_edits)
        yield
    finally:
        installer.remove()
        calls.detach()
