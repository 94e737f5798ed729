"""Weight perturbation: the parameter-space twin of `intervene`.

`perturb(model, {name: (mask, values)})` writes `values` into the entries of parameter `name`
selected by `mask` for the duration of the block and restores the original entries
bit-exactly on exit, exceptions included. Memory is bounded by the selected entries.

A parameter that accelerate offloads (a `device_map` to CPU RAM or "disk") is edited where it is
loaded before each forward (`steerscope.offload.replaced`), so its stored values are never
written and every forward inside the block sees the edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor

from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.offload import Replacement, replaced, stored_value

#: New values: a tensor with one value per selected entry, a scalar, or a function of the
#: selected original values and the whole parameter.
Values = Tensor | float | Callable[[Tensor, Tensor], Tensor]


def _new_values(values: Values, selected: Tensor, weight: Tensor) -> Tensor:
    if callable(values):
        values = values(selected, weight)
    try:
        new = torch.as_tensor(values, dtype=weight.dtype, device=weight.device)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"values must be a number, a tensor or a function returning one, got {type(values).__name__}"
        ) from None
    if new.dim() and new.shape != selected.shape:
        raise InputError(f"got {tuple(new.shape)} values for {selected.numel()} selected entries")
    return new.expand_as(selected)


def _offloaded_edit(hf: torch.nn.Module, name: str, mask: Tensor, values: Values) -> Replacement:
    """The replacement that writes `values` into the masked entries of each loaded copy of an
    offloaded parameter; it keeps only the mask and the new values."""
    stored = stored_value(hf, name)
    mask = mask.to(stored.device)
    new = _new_values(values, stored[mask], stored)

    def edited(value: Tensor) -> Tensor:
        copy = value.clone()  # never the stored tensor: RAM offload hands out the original
        copy[mask.to(copy.device)] = new.to(copy.device)
        return copy

    return edited


def _parameter(hf: torch.nn.Module, params: Mapping[str, Tensor], name: str) -> Tensor:
    """The parameter `name`; a tied alias (e.g. `lm_head.weight` sharing the embedding) or an
    unknown name is an error naming the tensor to edit or parameters with a similar name."""
    if name in params:
        return params[name]
    aliases = dict(hf.named_parameters(remove_duplicate=False))
    if name in aliases:
        owner = next(p for p, tensor in params.items() if tensor is aliases[name])
        raise InputError(
            f"{name} is tied to {owner} (one tensor under two names); perturb {owner}, which changes both"
        )
    near = [p for p in params if p.endswith(name.split(".")[-1])][:5]
    raise InputError(f"no parameter {name!r} in this model; e.g. {', '.join(near) or list(params)[:5]}")


def _bool_mask(name: str, mask: object, weight: Tensor) -> Tensor:
    """`mask` as a bool tensor of `weight`'s shape; a nested list or array of true/false is read
    as one, anything else is an error."""
    try:
        found = torch.as_tensor(mask)
    except (TypeError, ValueError, RuntimeError):
        found = None
    if found is None or found.dtype != torch.bool or found.shape != weight.shape:
        got = f"{found.dtype} {tuple(found.shape)}" if found is not None else type(mask).__name__
        raise InputError(
            f"mask for {name} must be a bool tensor (or nested list of true/false) of shape "
            f"{tuple(weight.shape)}, got {got}"
        )
    return found


@contextmanager
def perturb(model: ModelLike, edits: Mapping[str, tuple[Tensor, Values]]) -> Iterator[None]:
    """Set entries of named parameters for a block: `{param_name: (bool mask, values)}`; a mask may
    also be a nested list of true/false."""
    hf = as_model(model).hf
    params = dict(hf.named_parameters())
    saved: list[tuple[Tensor, Tensor, Tensor]] = []
    offloaded: dict[str, Replacement] = {}
    try:
        with torch.no_grad():
            for name, edit in edits.items():
                if not isinstance(edit, tuple) or len(edit) != 2:
                    raise InputError(
                        f"edit of {name} must be a (mask, values) pair, got {type(edit).__name__}"
                    )
                weight = _parameter(hf, params, name)
                mask, values = _bool_mask(name, edit[0], weight), edit[1]
                if weight.device.type == "meta":
                    offloaded[name] = _offloaded_edit(hf, name, mask, values)
                    continue
                mask = mask.to(weight.device)
                original = weight[mask].clone()
                new = _new_values(values, original, weight)
                saved.append((weight, mask, original))
                weight[mask] = new
        with replaced(hf, offloaded):
            yield
    finally:
        with torch.no_grad():
            for weight, mask, original in reversed(saved):
                weight[mask] = original
