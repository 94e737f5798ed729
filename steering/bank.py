"""Steering a compiled model: a steering bank, installed once, whose tensors the compiled graph reads.

A compiled forward runs no Python per step, so `steer()`'s hooks cannot drive it. A bank keeps
everything a steering block changes in tensors that live as long as the bank: per site, one slot
per vector of the block, [max_batch, d_model] (the scaled vector of each batch row), the sites
on one device packed into one tensor; the block's token selection as four integers, whether
strength is relative and the rows' prompt lengths, packed into one integer tensor. Few graph
inputs and one write of them per call keep a compiled step's cost that of the plain model. Its wrappers around the steered
modules' and the decoder's `forward` (see `steerscope.compiled`) read them at every call, so a
compiled graph traced with the bank in place reads them too. `steer()` on a model with a bank
writes the block into them in place (`copy_`) and zeroes the slots after it: entering and
leaving a block, changing the vector, the strength, its sign or the positions recompile nothing.
What a graph specialises on, and so compiles once for each value: the number of rows holding
different values (1 for one strength and vector, and between blocks), the number of vectors at
a site, and `norm_preserving`.

Token roles come from the call's tensors, as `TokenInfo`'s do: positions from the 2-D attention
mask, else from `position_ids` (what `generate` passes with a static cache), else from the cache
length; each row's prompt length is kept in a buffer, written by the call that starts a sequence
(nothing cached). A selection is `lower <= position < upper` with each bound `prompt_length *
coefficient + offset`, so every positions mode is the same graph. Where a static cache hides the
padding (a 4-D mask), pads count as position 0 and may be steered in "prompt" or ranges from 0:
the attention mask keeps pads from real tokens, whose results stay those of the eager path.

The design is the one vLLM's steering forks use (vectors and per-slot scales in static buffers
updated in place between replays); llama.cpp likewise adds its control vector as one graph node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from steerscope.compiled import Forward, unwrap_forward, wrap_forward, wrappers_of
from steerscope.errors import InputError
from steerscope.intervene import module_at
from steerscope.model import Model, ModelLike, as_model
from steerscope.sites import D_MODEL_SHAPE, SITE_KINDS, Site, module_path
from steerscope.tokens import past_length, position_ids_of, repeats_and_extends

#: Site kinds a bank steers: the editable [batch, pos, d_model] activations a steering vector is
#: added to (the layer's input, its output or a branch's output; `SITE_KINDS`).
BANK_KINDS = tuple(
    name
    for name, kind in SITE_KINDS.items()
    if kind.shape == D_MODEL_SHAPE and kind.head_layout is None and kind.editable
)
#: Beyond any position: the open end of a selection.
_END = 2**62
#: (lower coefficient, lower offset, upper coefficient, upper offset) per positions mode.
_MODE_BOUNDS = {
    "all": (0, -_END, 0, _END),
    "prompt": (0, 0, 1, 0),
    "last_prompt": (1, -1, 1, 0),
    "generated": (1, 0, 0, _END),
}
_NOTHING = (0, 1, 0, 0)  # 1 <= position < 0: no token
_vector_norm = torch.linalg.vector_norm


def selection_bounds(positions: str | tuple[int, int]) -> tuple[int, int, int, int]:
    """The four integers of a checked positions mode or (start, stop) range (see module docstring)."""
    if isinstance(positions, str):
        return _MODE_BOUNDS[positions]
    start, stop = positions
    return (0, start, 0, stop)


#: Layout of the bank's integer state: the selection bounds, the relative flag, the batch size
#: whose prompt lengths are known (-1: none), then one prompt length per row.
_BOUNDS, _RELATIVE, _KNOWN, _LENGTHS = slice(0, 4), 4, 5, 6


def _static(tensor: Tensor) -> Tensor:
    """Mark a bank tensor as living at one address (CUDA graphs then read it without copying)."""
    torch._dynamo.mark_static_address(tensor)
    return tensor


class _DeviceSlots:
    """The slots of the sites on one device: per vector of a block, one [sites, max_batch,
    d_model] tensor, a site's slot being its index along the first dimension."""

    def __init__(self, d_model: int, max_batch: int, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device, self.index = dtype, device, {}
        self.shape = (0, max_batch, d_model)
        self.vectors: list[Tensor] = []

    def add(self, site: Site) -> None:
        self.index[site] = len(self.index)
        self.shape = (len(self.index), *self.shape[1:])

    def grow(self, count: int) -> None:
        while len(self.vectors) < count:
            self.vectors.append(_static(torch.zeros(self.shape, dtype=self.dtype, device=self.device)))


class SteeringBank:
    """Steering state a compiled forward reads, installed on a model by `install_steering_bank`.

    `steer()` on the model writes its block into the bank (`sites` must hold every site it steers)
    and clears it on exit. `remove()` (or leaving `with install_steering_bank(...) as bank:`) takes
    the bank off the model; graphs compiled with it then no longer match and are traced again.
    """

    def __init__(self, model: Model, sites: Sequence[Site], max_batch: int) -> None:
        self.sites = tuple(sites)
        self.max_batch = max_batch
        hf, anatomy = model.hf, model.anatomy
        self._decoder = module_at(hf, anatomy.family.decoder)
        self._dtype = next(hf.parameters()).dtype
        device = hf.get_input_embeddings().weight.device
        self._state = _static(torch.zeros(_LENGTHS + max_batch, dtype=torch.long, device=device))
        self._state[_BOUNDS] = torch.tensor(_NOTHING)
        self._state[_KNOWN] = -1
        self._devices: dict[torch.device, _DeviceSlots] = {}
        self._slots: dict[Site, _DeviceSlots] = {}
        self._rows = 1
        self._norm_preserving = False
        self._holding = False
        self._weights: Tensor | None = None  # this call's token selection, [batch, pos, 1]
        self._prompt_ids: Tensor | None = None  # to recognise a cache-less continuation
        self._wrapped: list[tuple[nn.Module, Forward]] = []
        try:
            for site in self.sites:
                module = module_at(model.hf, module_path(site, anatomy))
                parameter = next(module.parameters(), None)
                where = parameter.device if parameter is not None else device
                if where not in self._devices:
                    self._devices[where] = _DeviceSlots(anatomy.d_model, max_batch, self._dtype, where)
                self._slots[site] = self._devices[where]
                self._slots[site].add(site)
                self._wrap(
                    module,
                    self._pre_body(site) if SITE_KINDS[site.kind].hook == "input" else self._post_body(site),
                )
            for slots in self._devices.values():
                slots.grow(1)
            self._wrap(self._decoder, self._track)
        except BaseException:
            self.remove()
            raise
        self._wrapped[-1][1]._steerscope_bank = self  # type: ignore[attr-defined]

    @staticmethod
    def of(model: ModelLike) -> SteeringBank | None:
        """The bank installed on `model`, or None."""
        loaded = as_model(model)
        decoder = module_at(loaded.hf, loaded.anatomy.family.decoder)
        for wrapper in wrappers_of(decoder):
            bank = getattr(wrapper, "_steerscope_bank", None)
            if bank is not None:
                return bank
        return None

    def missing(self, sites: Sequence[Site]) -> list[Site]:
        """The sites among `sites` this bank has no slots for."""
        return [site for site in sites if site not in self._slots]

    def remove(self) -> None:
        """Take the bank off the model (idempotent)."""
        while self._wrapped:
            module, wrapper = self._wrapped.pop()
            unwrap_forward(module, wrapper)

    def __enter__(self) -> SteeringBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "installed" if self._wrapped else "removed"
        return f"SteeringBank({', '.join(map(str, self.sites))}; max_batch {self.max_batch}, {state})"

    @contextmanager
    def holding(
        self,
        vectors: dict[Site, list[Tensor]],
        positions: str | tuple[int, int],
        relative: bool,
        norm_preserving: bool,
    ) -> Iterator[None]:
        """Write one steering block for the `with` body and clear it after, exceptions included.

        `vectors`: per site, the scaled vector of each row of each vector of the block, [rows,
        d_model], rows 1 (every row alike) or one per batch row (the same count throughout, at
        most `max_batch`); `positions` checked by `steer()`.
        """
        if not self._wrapped:
            raise InputError("this steering bank was removed; install a new one")
        if self._holding:
            raise InputError(
                "a steering bank holds one steer() block at a time; put every vector in one steer() call"
            )
        rows = max((matrix.shape[0] for matrices in vectors.values() for matrix in matrices), default=1)
        if rows > self.max_batch:
            raise InputError(
                f"a steering block with {rows} rows is more than the steering bank's max_batch="
                f"{self.max_batch}; install it with a larger max_batch"
            )
        self._holding = True
        try:
            for slots in self._devices.values():
                slots.grow(max((len(vectors.get(site, [])) for site in slots.index), default=0))
            for site, slots in self._slots.items():
                for slot, matrix in zip(slots.vectors, vectors.get(site, []), strict=False):
                    slot[slots.index[site], :rows].copy_(matrix.expand(rows, -1))  # one row: every row
            self._state[: _KNOWN + 1].copy_(torch.tensor([*selection_bounds(positions), relative, -1]))
            self._prompt_ids = None
            self._rows = rows
            self._norm_preserving = norm_preserving
            yield
        finally:
            for slots in self._devices.values():
                for slot in slots.vectors:
                    slot.zero_()
            self._state[_BOUNDS].copy_(torch.tensor(_NOTHING))
            self._rows = 1
            self._holding = False

    # ---------------------------------------------------------------- what runs inside forward

    def _wrap(self, module: nn.Module, body: Any) -> None:
        self._wrapped.append((module, wrap_forward(module, body)))

    def _track(self, inner: Forward, *args: Any, **kwargs: Any) -> Any:
        """The decoder's wrapper: this call's token selection for every steered site, then the call."""
        self._weights = self._selection(args, kwargs)
        output = inner(*args, **kwargs)
        self._weights = None
        return output

    def _pre_body(self, site: Site) -> Any:
        slots, index = self._slots[site], self._slots[site].index[site]  # no dict lookup to guard

        def body(inner: Forward, *args: Any, **kwargs: Any) -> Any:
            if "hidden_states" in kwargs:
                edited = self._edit(site, slots, index, kwargs["hidden_states"])
                return inner(*args, **{**kwargs, "hidden_states": edited})
            return inner(self._edit(site, slots, index, args[0]), *args[1:], **kwargs)

        return body

    def _post_body(self, site: Site) -> Any:
        slots, index = self._slots[site], self._slots[site].index[site]

        def body(inner: Forward, *args: Any, **kwargs: Any) -> Any:
            output = inner(*args, **kwargs)
            if isinstance(output, tuple):
                return (self._edit(site, slots, index, output[0]), *output[1:])
            return self._edit(site, slots, index, output)

        return body

    def _edit(self, site: Site, slots: _DeviceSlots, index: int, act: Tensor) -> Tensor:
        """Each slot's vector added at the selected tokens, as `steering_edit` adds it."""
        weights = self._weights
        if weights is None:
            raise RuntimeError(f"site {site}: the steering bank saw no decoder call before this layer ran")
        weights = weights.to(device=act.device, dtype=act.dtype)
        rows, batch = self._rows, act.shape[0]
        if batch % rows:
            raise InputError(
                f"steer() got {rows} per-row strengths or vectors for a batch of {batch} rows; "
                "give one per batch row (beams and num_return_sequences repeat each row)"
            )
        relative = self._state[_RELATIVE].to(act.device) != 0
        for slot in slots.vectors:
            rows_of = slot[index, :rows]
            vector = rows_of[0] if rows == 1 else rows_of.repeat_interleave(batch // rows, 0).unsqueeze(1)
            vector = vector.to(act.dtype)
            norm = _vector_norm(act, dim=-1, keepdim=True)
            factor = torch.where(relative, norm, torch.ones_like(norm))
            steered = torch.addcmul(act, factor * weights, vector)
            if self._norm_preserving:
                rescaled = steered * (norm / _vector_norm(steered, dim=-1, keepdim=True).clamp(min=1e-12))
                steered = torch.where(weights.bool(), rescaled, act)
            act = steered
        return act

    def _selection(self, args: tuple, kwargs: dict) -> Tensor:
        """This call's selected tokens as 1.0 / 0.0, [batch, pos, 1], from its tensors only."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        shaped = input_ids if input_ids is not None else kwargs["inputs_embeds"]
        batch, n_new = shaped.shape[0], shaped.shape[1]
        if batch > self.max_batch:
            raise InputError(
                f"a batch of {batch} rows is more than the steering bank's max_batch={self.max_batch}; "
                "install it with a larger max_batch"
            )
        device = self._state.device
        attention = kwargs.get("attention_mask")
        mask = attention if isinstance(attention, Tensor) and attention.dim() == 2 else None
        cache = kwargs.get("past_key_values")
        past = past_length(mask, n_new, cache)
        if mask is not None:
            real = mask.to(device) != 0
            counted = real.cumsum(-1)
            positions = (counted[:, past:] - 1).masked_fill(~real[:, past:], -1)
            through = counted[:, -1]
            before = counted[:, past - 1] if past > 0 else torch.zeros_like(through)
        else:
            given = position_ids_of(kwargs, batch, n_new)
            if given is not None:
                positions = given.to(device)
            else:
                positions = (torch.arange(n_new, device=device) + past).expand(batch, n_new)
            through = positions.amax(-1) + 1
            before = positions[:, 0]
        lengths = self._prompt_lengths_of(batch, past, cache, input_ids, through, before)
        bounds = self._state[_BOUNDS]
        lower = lengths * bounds[0] + bounds[1]
        upper = lengths * bounds[2] + bounds[3]
        chosen = (positions >= lower[:, None]) & (positions < upper[:, None])
        return chosen.unsqueeze(-1).to(self._dtype)

    def _prompt_lengths_of(
        self,
        batch: int,
        past: int | Tensor,
        cache: Any,
        input_ids: Tensor | None,
        through: Tensor,
        before: Tensor,
    ) -> Tensor:
        """Each row's prompt length [batch], as `TokenTracker.observe` decides it, and kept for the
        calls after: a call with nothing cached starts a sequence (its real tokens are the prompt),
        unless it repeats and extends the last prompt without a cache; the call continuing a
        shared-prefix cache completes the prompt; a continuation of a sequence this block never
        saw starts generating where it starts."""
        stored = self._state[_LENGTHS : _LENGTHS + batch]
        known = self._state[_KNOWN] == batch
        if isinstance(past, Tensor):  # a static cache's length: decided in the graph
            lengths = torch.where(past == 0, through, torch.where(known, stored, before))
        elif past > 0 and past == getattr(cache, "prefix_length", None):
            lengths = through
        elif past == 0 and not (cache is None and repeats_and_extends(self._prompt_ids, input_ids)):
            if cache is None:
                self._prompt_ids = input_ids
            lengths = through
        else:
            lengths = torch.where(known, stored, before)
        batch_now = torch.full((1,), batch, dtype=lengths.dtype, device=lengths.device)
        self._state[_KNOWN : _LENGTHS + batch].copy_(torch.cat([batch_now, lengths]))  # one write
        return lengths


def install_steering_bank(
    model: ModelLike, sites: str | Site | Sequence[str | Site], max_batch: int = 64
) -> SteeringBank:
    """Install a steering bank on `model` for `sites`, so `steer()` works inside compiled
    generation (`torch.compile`, transformers' compiled decoding with a static cache).

    The bank stays on the model until `bank.remove()` (or the end of `with install_steering_bank(
    ...) as bank:`); every `steer()` block on the model then goes through it, compiled or not, and
    must steer only `sites` (kinds resid_pre, resid_post, attn_out, mlp_out) with at most
    `max_batch` rows per forward call (beams included). Install before or after compiling: a graph
    traced without the bank no longer matches and is traced again once.
    """
    loaded = as_model(model)
    if isinstance(sites, (str, Site)):
        sites = [sites]
    resolved = list(dict.fromkeys(Site.parse(s).validate(loaded.anatomy) for s in sites))
    if not resolved:
        raise InputError("install_steering_bank needs at least one site")
    wrong = [str(s) for s in resolved if s.kind not in BANK_KINDS or s.head is not None]
    if wrong:
        raise InputError(
            f"a steering bank steers whole-layer sites of kinds {', '.join(BANK_KINDS)}; got {', '.join(wrong)}"
        )
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= 1 << 20:
        raise InputError(f"max_batch must be an integer from 1 to {1 << 20}, got {max_batch!r}")
    existing = SteeringBank.of(loaded)
    if existing is not None:
        raise InputError(f"the model already has {existing!r}; remove it first (bank.remove())")
    return SteeringBank(loaded, resolved, max_batch)
