"""`steer(model, vector, strength=..., positions=...)`: add steering vectors inside any forward
or `generate()` call, through the one `intervene` mechanism.

Strength is relative by default: at each steered token, the added vector has norm
`strength * ||h||`, with h the activation at the site (Gemma 3 270M's mid-layer residual norm is
~6e3, so absolute units mean little). `scale="absolute"` adds `strength * direction` as stored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor

from steerscope.errors import InputError
from steerscope.intervene import Edit, ignores_tokens, intervene, result_checked
from steerscope.model import ModelLike
from steerscope.steering.vector import SteeringVector
from steerscope.tokens import TokenInfo

PositionMode = Literal["all", "prompt", "last_prompt", "generated"]
POSITION_MODES = ("all", "prompt", "last_prompt", "generated")
SCALES = ("relative", "absolute")
Positions = PositionMode | range | tuple[int, int]
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


def _check_positions(positions: Any) -> Positions:
    if isinstance(positions, str) and positions in POSITION_MODES:
        return positions  # type: ignore[return-value]
    if isinstance(positions, range) and positions.step == 1:
        return positions
    if isinstance(positions, tuple) and len(positions) == 2 and all(isinstance(p, int) for p in positions):
        return positions
    raise InputError(
        f"bad positions {positions!r}; valid: {', '.join(map(repr, POSITION_MODES))}, "
        "or an absolute range such as range(3, 10) or (3, 10)"
    )


def finite_strength(value: Any) -> float:
    """`value` as a float when it is a finite real number; anything else is an `InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"strength must be a finite number, got {value!r} ({type(value).__name__})")
    return float(value)


def _strengths(strength: Any, n_vectors: int) -> list[float]:
    """One finite strength per vector, from one number or one per vector."""
    if isinstance(strength, numbers.Real) and not isinstance(strength, bool):
        return [finite_strength(strength)] * n_vectors
    if isinstance(strength, (str, bytes)) or not hasattr(strength, "__iter__"):
        raise InputError(
            f"strength must be a finite number or one per vector, got {strength!r} ({type(strength).__name__})"
        )
    values = [finite_strength(s) for s in strength]
    if len(values) != n_vectors:
        raise InputError(f"got {len(values)} strengths for {n_vectors} vectors")
    return values


def steering_edit(
    direction: Tensor,
    strength: float,
    positions: Positions = "all",
    scale: str = "relative",
    norm_preserving: bool = False,
) -> Edit:
    """The edit that adds `direction` at the selected tokens of one site.

    `positions="all"` adds it at every token, pads included: the attention mask keeps a pad from
    every real token, so real tokens get exactly what they get unpadded, and leaving pads out would
    cost a token mask per decode step. The other modes select real tokens only.

    Checked here, before any forward pass: a finite strength, known positions and scale, a finite
    1-D float direction, and at relative scale a nonzero one (it is normalised).

    Each hook call does only what depends on the activation (one add, or one fused multiply-add
    after the norm when relative or norm-preserving): the scaled vector is cast once per device and
    dtype, the token mask (other modes) made once per forward call (`_selection_weights`).
    """
    strength = finite_strength(strength)
    positions = _check_positions(positions)
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
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
    relative = scale == "relative"
    every_token = positions == "all"
    # The vector in the activation's dtype and on its device, and the token weights' key and
    # computation, made again only when the site's dtype or device changes.
    vector_dtype = vector_device = vector = weights_key = weights = None

    def edit(act: Tensor, tokens: TokenInfo | None) -> Tensor:
        nonlocal vector_dtype, vector_device, vector, weights_key, weights
        dtype, device = act.dtype, act.device
        if dtype is not vector_dtype or device != vector_device:
            vector_dtype, vector_device = dtype, device
            vector = scaled.to(device=device, dtype=dtype)
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


@contextmanager
def steer(
    model: ModelLike,
    vectors: SteeringVector | Sequence[SteeringVector],
    strength: float | Sequence[float] = 1.0,
    positions: Positions = "all",
    scale: str = "relative",
    norm_preserving: bool = False,
    force: bool = False,
) -> Iterator[None]:
    """Apply one or more steering vectors (each at all of its sites) for the block.

    `strength` is one finite number or one per vector; strength 0 installs nothing, so the model
    is bit-identical to unsteered. `force` applies vectors made for another config (see
    `SteeringVector.check`). Every argument is checked before the block runs.
    """
    vector_list = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not vector_list or not all(isinstance(v, SteeringVector) for v in vector_list):
        raise InputError(f"vectors must be a SteeringVector or a non-empty list of them, got {vectors!r:.80}")
    strengths = _strengths(strength, len(vector_list))
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    positions = _check_positions(positions)
    edits: dict[str, list[Edit]] = {}
    for vector, s in zip(vector_list, strengths, strict=True):
        vector.check(model, force=force)
        if s == 0.0:
            continue
        for site, direction in vector.directions.items():
            try:
                edit = steering_edit(direction, s, positions, scale, norm_preserving)
            except InputError as error:
                raise InputError(f"{site}: {error}") from None
            edits.setdefault(site, []).append(edit)
    with intervene(model, edits):
        yield
