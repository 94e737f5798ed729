"""`steer(model, vector, strength=..., positions=...)`: add steering vectors inside any forward
or `generate()` call, through the one `intervene` mechanism (or, on a model with a steering bank,
through the bank, which also works inside compiled generation: `steerscope.steering.bank`).

Strength is relative by default: at each steered token, the added vector has norm
`strength * ||h||`, with h the activation at the site (Gemma 3 270M's mid-layer residual norm is
~6e3, so absolute units mean little). `scale="absolute"` adds `strength * direction` as stored.
A strength may differ per batch row (a dose-response sweep in one `generate` call), and so may
the vector (`per_row=True`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor

from steerscope.compiled import how_compiled
from steerscope.errors import InputError
from steerscope.intervene import Edit, ignores_tokens, intervene, result_checked
from steerscope.model import ModelLike
from steerscope.sites import Site
from steerscope.steering.bank import SteeringBank
from steerscope.steering.vector import SteeringVector
from steerscope.tokens import TokenInfo

PositionMode = Literal["all", "prompt", "last_prompt", "generated"]
POSITION_MODES = ("all", "prompt", "last_prompt", "generated")
SCALES = ("relative", "absolute")
Positions = PositionMode | range | tuple[int, int]
#: A range's stop beyond this (e.g. 10**30, "to the end") is clamped to it: no context is longer.
MAX_POSITION = 2**62
#: One strength for every row, or one per batch row.
Strength = float | Sequence[float] | Tensor
_vector_norm = torch.linalg.vector_norm


def token_selection(positions: Positions, tokens: TokenInfo) -> Tensor:
    """Which tokens of this call to steer: a [batch, pos] bool mask; "all" is every token, pads
    included (the steering edit then needs no mask at all), the other modes never select a pad."""
    if positions == "all":
        return torch.ones_like(tokens.is_real)
    if positions == "prompt":
        return tokens.is_prompt
    if positions == "last_prompt":
        return tokens.is_last_prompt
    if positions == "generated":
        return tokens.is_generated
    start, stop = (positions.start, positions.stop) if isinstance(positions, range) else positions
    return tokens.is_real & (tokens.positions >= start) & (tokens.positions < stop)


def _selection_weights(
    positions: Positions, dtype: torch.dtype
) -> tuple[tuple, Callable[[TokenInfo], Tensor]]:
    """(key, compute) for `TokenInfo.once`: `token_selection` as 1.0 / 0.0 in `dtype`, [batch,
    pos, 1], made once per forward call and shared by every steered site of the call."""

    def compute(tokens: TokenInfo) -> Tensor:
        return token_selection(positions, tokens).unsqueeze(-1).to(dtype)

    return ("steering.selection_weights", positions, dtype), compute


def check_positions(positions: Any) -> PositionMode | tuple[int, int]:
    """A positions mode, or an absolute range as (start, stop): `range(start, stop)` (step 1) or a
    pair of integers, 0 <= start < stop, counting real tokens from 0 (padding excluded). A stop
    beyond any context (e.g. 10**30, to the end) is clamped to `MAX_POSITION`. Anything else,
    an empty, reversed or negative range included, is an `InputError`."""
    if isinstance(positions, str) and positions in POSITION_MODES:
        return positions  # type: ignore[return-value]
    valid = (
        f"valid: {', '.join(map(repr, POSITION_MODES))}, or an absolute range such as range(3, 10) or (3, 10)"
    )
    if isinstance(positions, range):
        if positions.step != 1:
            raise InputError(f"bad positions {positions!r}: a range must have step 1; {valid}")
        bounds: tuple[Any, ...] = (positions.start, positions.stop)
    elif isinstance(positions, tuple) and len(positions) == 2:
        bounds = positions
    else:
        raise InputError(f"bad positions {positions!r}; {valid}")
    if not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in bounds):
        raise InputError(f"bad positions {positions!r}: start and stop must be integers; {valid}")
    start, stop = int(bounds[0]), int(bounds[1])
    if start < 0:
        raise InputError(
            f"bad positions {positions!r}: start must be >= 0 (positions count real tokens from 0)"
        )
    if stop <= start:
        raise InputError(f"bad positions {positions!r}: the range is empty; stop must be above start")
    return start, min(stop, MAX_POSITION)


def finite_strength(value: Any) -> float:
    """`value` as a float when it is a finite real number (a 0-d tensor is one); anything else is
    an `InputError`."""
    if isinstance(value, Tensor) and value.dim() == 0 and value.dtype is not torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"strength must be a finite number, got {value!r} ({type(value).__name__})")
    return float(value)


def _is_number(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) or (
        isinstance(value, Tensor) and value.dim() == 0
    )


def row_strengths(value: Any) -> list[float]:
    """A strength as one finite float per batch row ([s]: every row alike), from a number, a 0-d
    tensor, or a non-empty sequence or 1-D tensor of them; anything else is an `InputError`."""
    if _is_number(value):
        return [finite_strength(value)]
    if isinstance(value, Tensor):
        values = value.tolist() if value.dim() == 1 else None
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        values = list(value)
    else:
        values = None
    if not values:
        raise InputError(
            "strength must be a finite number, or one per batch row (a list or 1-D tensor), or one "
            f"per vector; got {value!r:.80} ({type(value).__name__})"
        )
    return [finite_strength(v) for v in values]


def _strengths(strength: Any, n_vectors: int, per_row: bool) -> list[list[float]]:
    """Per vector, its strength per batch row (one value: every row alike). With several vectors
    (and not `per_row`) a sequence gives one strength per vector, each a number or one per row;
    otherwise a sequence is one per row."""
    if per_row or n_vectors == 1 or _is_number(strength):
        return [row_strengths(strength)] * (1 if per_row else n_vectors)
    if isinstance(strength, (str, bytes)) or not hasattr(strength, "__len__"):
        row_strengths(strength)  # raises, naming what is valid
    if len(strength) != n_vectors:
        raise InputError(
            f"got {len(strength)} strengths for {n_vectors} vectors; give one per vector "
            "(each a number, or one per batch row)"
        )
    return [row_strengths(s) for s in strength]


def scaled_vector(direction: Tensor, strength: float, scale: str) -> Tensor:
    """`strength` x the unit direction (relative scale) or x the direction (absolute): what is
    added at a token (times its residual norm when relative). Checked: a finite 1-D float
    direction, and at relative scale a nonzero one (it is normalised)."""
    if not isinstance(direction, Tensor) or direction.dim() != 1 or not direction.is_floating_point():
        raise InputError(f"direction must be a 1-D float tensor [d_model], got {direction!r:.80}")
    scaled = strength * (direction / direction.norm() if scale == "relative" else direction)
    if not torch.isfinite(scaled).all():  # one check, then say why
        if not torch.isfinite(direction).all():
            raise InputError("direction has NaN or Inf entries")
        if scale == "relative" and direction.norm() == 0:
            raise InputError(
                "direction has zero norm, so relative strength has no direction to scale; "
                "use a nonzero direction (scale='absolute' adds it as stored)"
            )
        raise InputError(f"strength {strength} times the direction overflows {direction.dtype}")
    return scaled


def _scaled_rows(directions: Sequence[Tensor | None], strengths: Sequence[float], scale: str) -> Tensor:
    """One scaled vector per row, [rows, d_model] (a row without a direction, or at strength 0,
    adds nothing); each row computed as `scaled_vector` computes it alone, so a row of a batch
    gets exactly the vector it gets in a batch of one."""
    rows = max(len(directions), len(strengths))
    directions = list(directions) * rows if len(directions) == 1 else list(directions)
    strengths = list(strengths) * rows if len(strengths) == 1 else list(strengths)
    if len(directions) != rows or len(strengths) != rows:
        raise InputError(f"got {len(directions)} directions and {len(strengths)} strengths; give one per row")
    present = next(d for d in directions if d is not None)
    return torch.stack(
        [
            torch.zeros_like(present) if d is None or s == 0.0 else scaled_vector(d, s, scale)
            for d, s in zip(directions, strengths, strict=True)
        ]
    )


def steering_edit(
    direction: Tensor,
    strength: Strength,
    positions: Positions = "all",
    scale: str = "relative",
    norm_preserving: bool = False,
) -> Edit:
    """The edit that adds `direction` at the selected tokens of one site.

    `strength` is a number or one per batch row; `direction` is [d_model], or [rows, d_model]
    with one direction per batch row. A forward call's batch must be a multiple of the rows (beams
    and `num_return_sequences` repeat each row); checked at the call.

    `positions="all"` adds it at every token, pads included: the attention mask keeps a pad from
    every real token, so real tokens get exactly what they get unpadded, and leaving pads out would
    cost a token mask per decode step. The other modes select real tokens only.

    Checked here, before any forward pass: finite strengths, known positions and scale, a finite
    float direction, and at relative scale a nonzero one (it is normalised).

    Each hook call does only what depends on the activation (one add, or one fused multiply-add
    after the norm when relative or norm-preserving): the scaled vector is cast once per device and
    dtype, the token mask (other modes) made once per forward call (`_selection_weights`).
    """
    values = row_strengths(strength)
    positions = check_positions(positions)
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    if isinstance(direction, Tensor) and direction.dim() == 2:
        scaled = _scaled_rows(list(direction), values, scale)
    elif len(values) > 1:
        scaled = _scaled_rows([direction], values, scale)
    else:
        scaled = scaled_vector(direction, values[0], scale)
    return _adding_edit(scaled, positions, scale == "relative", norm_preserving)


def _adding_edit(
    scaled: Tensor, positions: PositionMode | tuple[int, int], relative: bool, norm_preserving: bool
) -> Edit:
    """`steering_edit` from its checked scaled vector: [d_model], or [rows, d_model] per batch row."""
    if scaled.dim() == 2 and scaled.shape[0] == 1:
        scaled = scaled[0]
    rows = scaled.shape[0] if scaled.dim() == 2 else 1
    every_token = positions == "all"
    # The vector in the activation's dtype and on its device (and, per row, for the batch), and the
    # token weights' key and computation, made again only when the site's dtype, device or batch
    # changes.
    vector_dtype = vector_device = vector = weights_key = weights = None
    vector_batch = 0

    def edit(act: Tensor, tokens: TokenInfo | None) -> Tensor:
        nonlocal vector_dtype, vector_device, vector, weights_key, weights, vector_batch
        dtype, device = act.dtype, act.device
        if (
            dtype is not vector_dtype
            or device != vector_device
            or (rows > 1 and act.shape[0] != vector_batch)
        ):
            vector_dtype, vector_device = dtype, device
            vector = scaled.to(device=device, dtype=dtype)
            if rows > 1:
                vector_batch = act.shape[0]
                if vector_batch % rows:
                    raise InputError(
                        f"steer() got {rows} per-row strengths or vectors for a batch of {vector_batch} "
                        "rows; give one per batch row (beams and num_return_sequences repeat each row)"
                    )
                vector = vector.repeat_interleave(vector_batch // rows, 0).unsqueeze(1)
            weights_key, weights = _selection_weights(positions, dtype)
        chosen = None if every_token else tokens.once(weights_key, weights)
        if not (relative or norm_preserving):
            return act + vector if chosen is None else torch.addcmul(act, chosen, vector)
        norm = _vector_norm(act, dim=-1, keepdim=True)
        if relative:
            steered = torch.addcmul(act, norm if chosen is None else norm * chosen, vector)
        else:
            steered = act + vector if chosen is None else torch.addcmul(act, chosen, vector)
        if norm_preserving:
            rescaled = steered * (norm / _vector_norm(steered, dim=-1, keepdim=True).clamp(min=1e-12))
            steered = rescaled if chosen is None else torch.where(chosen.bool(), rescaled, act)
        return steered

    result_checked(edit)  # act's shape (the direction has d_model entries), dtype and device
    if every_token:
        ignores_tokens(edit)
    return edit


def _block(
    vectors: list[SteeringVector], strengths: list[list[float]], per_row: bool
) -> dict[str, list[tuple[list[Tensor | None], list[float]]]]:
    """What a block adds, per site: (directions, strengths) per vector, each one per row or one for
    every row; with `per_row`, one entry per site, row i holding vector i's direction (None where
    vector i has no direction at the site). Vectors at strength 0 everywhere add nothing."""
    block: dict[str, list[tuple[list[Tensor | None], list[float]]]] = {}
    if per_row:
        if all(v == 0.0 for v in strengths[0]):
            return block
        sites = dict.fromkeys(site for vector in vectors for site in vector.directions)
        for site in sites:
            rows = [vector.directions.get(site) for vector in vectors]
            block[site] = [(rows, strengths[0])]
        return block
    for vector, values in zip(vectors, strengths, strict=True):
        if all(v == 0.0 for v in values):
            continue
        for site, direction in vector.directions.items():
            block.setdefault(site, []).append(([direction], values))
    return block


@contextmanager
def steer(
    model: ModelLike,
    vectors: SteeringVector | Sequence[SteeringVector],
    strength: Strength | Sequence[Strength] = 1.0,
    positions: Positions = "all",
    scale: str = "relative",
    norm_preserving: bool = False,
    force: bool = False,
    per_row: bool = False,
) -> Iterator[None]:
    """Apply one or more steering vectors (each at all of its sites) for the block.

    `strength` is one finite number (a 0-d tensor is one) or one per batch row (a list or 1-D
    tensor); with several vectors, a list gives one per vector, each a number or one per row.
    `per_row=True` applies `vectors[i]` to batch row i only (at `strength`, a number or one per
    row). Each row then gets exactly what a batch of that row alone gets; beams and
    `num_return_sequences` repeat each row. Strength 0 everywhere installs nothing, so the model is
    bit-identical to unsteered. `force` applies vectors made for another config (see
    `SteeringVector.check`). Every argument is checked before the block runs.

    A model with a steering bank (`install_steering_bank`) is steered through it, compiled or
    not; a compiled model without one is refused, since hooks added to it would not run in its
    graph (see `steerscope.compiled`).
    """
    vector_list = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not vector_list or not all(isinstance(v, SteeringVector) for v in vector_list):
        raise InputError(f"vectors must be a SteeringVector or a non-empty list of them, got {vectors!r:.80}")
    strengths = _strengths(strength, len(vector_list), per_row)
    if per_row and len(strengths[0]) not in (1, len(vector_list)):
        raise InputError(
            f"got {len(strengths[0])} strengths for {len(vector_list)} per-row vectors; give one, or one per row"
        )
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    positions = check_positions(positions)
    loaded = None
    for vector in vector_list:
        loaded = vector.check(model, force=force)
    block = _block(vector_list, strengths, per_row)
    scaled: dict[str, list[Tensor]] = {}
    for site, entries in block.items():
        try:
            scaled[site] = [_scaled_rows(directions, values, scale) for directions, values in entries]
        except InputError as error:
            raise InputError(f"{site}: {error}") from None
    if not scaled:
        yield
        return
    rows = {matrix.shape[0] for matrices in scaled.values() for matrix in matrices} - {1}
    if len(rows) > 1:
        raise InputError(
            f"the vectors' per-row strengths give {sorted(rows)} rows; give every vector the same "
            "number of per-row values (one per batch row), or a single number"
        )
    sites = [Site.parse(site) for site in scaled]
    bank = SteeringBank.of(loaded)
    missing = sites if bank is None else bank.missing(sites)
    if not missing:
        by_site = {Site.parse(site): matrices for site, matrices in scaled.items()}
        with bank.holding(by_site, positions, scale == "relative", norm_preserving):
            yield
        return
    compiled = how_compiled(model, loaded.hf)
    if compiled is not None:
        listed = ", ".join(repr(str(site)) for site in sites)
        hint = (
            f"install a steering bank once: steerscope.steering.install_steering_bank(model, [{listed}])"
            if bank is None
            else f"its steering bank has no slot for {', '.join(map(str, missing))}: install one holding every site you steer"
        )
        raise InputError(f"{compiled}, so steering hooks would not run in its graph; {hint}")
    relative = scale == "relative"
    edits = {
        site: [_adding_edit(matrix, positions, relative, norm_preserving) for matrix in matrices]
        for site, matrices in scaled.items()
    }
    with intervene(model, edits):
        yield
