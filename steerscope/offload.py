"""Parameters that accelerate keeps outside their module: find them, read them, and give a block
edited values without writing where they are stored.

With a `device_map` that offloads (to CPU RAM when the model runs on GPUs, or to "disk"), an
offloaded parameter is a `meta` placeholder. accelerate's `AlignDevicesHook` on its module loads
the real values from the hook's `weights_map` before every forward and drops them after; the map
reads a state dict in RAM, the checkpoint's own safetensors, or numpy memmaps in `offload_folder`.
So an edit is made where the values are loaded, not where they are stored: the user's checkpoint
is never written, and putting the hook's map back restores every value exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from steerscope.errors import InputError

#: A function from a parameter's stored values to the values a forward pass should load.
Replacement = Callable[[Tensor], Tensor]


def _loading_hooks(module: nn.Module) -> list[Any]:
    """The accelerate hooks on `module` that load offloaded tensors before its forward."""
    hook = getattr(module, "_hf_hook", None)
    hooks = getattr(hook, "hooks", [hook])  # a SequentialHook holds several
    return [h for h in hooks if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None]


def offload_hook(hf: nn.Module, name: str) -> tuple[Any, str] | None:
    """The accelerate hook that loads parameter `name` before each forward, and the parameter's
    key in that hook's `weights_map`; None when the parameter lives in its module."""
    owner_path, _, tensor_name = name.rpartition(".")
    if hf.get_parameter(name).device.type != "meta":
        return None
    parts = owner_path.split(".") if owner_path else []
    # The owner's own hook loads its direct tensors; an ancestor's only with place_submodules.
    for depth in range(len(parts), -1, -1):
        module = hf.get_submodule(".".join(parts[:depth]))
        for hook in _loading_hooks(module):
            if depth == len(parts) or hook.place_submodules:
                return hook, ".".join([*parts[depth:], tensor_name])
    return None


def _hook_or_error(hf: nn.Module, name: str) -> tuple[Any, str]:
    found = offload_hook(hf, name)
    if found is None:
        raise InputError(
            f"parameter {name} is on the meta device and no accelerate hook loads it, so it has no "
            "values to read or edit; load the model with its weights (device_map offloads are supported)"
        )
    return found


def execution_device(hf: nn.Module, name: str) -> torch.device:
    """Where parameter `name` takes part in the forward pass: its own device, or the device its
    offloading hook loads it to."""
    parameter = hf.get_parameter(name)
    if parameter.device.type != "meta":
        return parameter.device
    hook, _ = _hook_or_error(hf, name)
    return torch.device(hook.execution_device)


def input_device(hf: nn.Module) -> torch.device:
    """The device to put input ids on: where the input embedding runs (never `meta`)."""
    weight = hf.get_input_embeddings().weight
    if weight.device.type != "meta":
        return weight.device
    return execution_device(hf, next(n for n, p in hf.named_parameters() if p is weight))


def stored_value(hf: nn.Module, name: str) -> Tensor:
    """The values of parameter `name`, loaded from where accelerate keeps them if it is offloaded.

    Read-only: for a parameter offloaded to RAM this is the stored tensor itself.
    """
    parameter = hf.get_parameter(name)
    if parameter.device.type != "meta":
        return parameter.detach()
    hook, key = _hook_or_error(hf, name)
    return hook.weights_map[key]


def _aliases(hf: nn.Module, name: str) -> list[str]:
    """`name` and every other name of the same parameter (tied weights: each module's hook loads
    its own copy, so an edit must reach all of them)."""
    parameter = hf.get_parameter(name)
    return [n for n, p in hf.named_parameters(remove_duplicate=False) if p is parameter]


class _Replaced(Mapping):
    """A hook's weights map whose values for some keys pass through a replacement."""

    def __init__(self, stored: Mapping, replacements: dict[str, Replacement]) -> None:
        self.stored = stored
        self.replacements = replacements

    def __getitem__(self, key: str) -> Tensor:
        value = self.stored[key]
        replace = self.replacements.get(key)
        return value if replace is None else replace(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)


@contextmanager
def replaced(hf: nn.Module, replacements: Mapping[str, Replacement]) -> Iterator[None]:
    """Inside the block, every forward loads `replace(stored)` for each offloaded parameter named
    in `replacements` ({name: replace}); on exit, exceptions included, the hooks load the stored
    values again. Nothing is written where the values are stored. Blocks nest (inner on top); a
    tied parameter is replaced under all of its names."""
    grouped: dict[int, tuple[Any, dict[str, Replacement]]] = {}
    for name, replace in replacements.items():
        for alias in _aliases(hf, name):
            hook, key = _hook_or_error(hf, alias)
            grouped.setdefault(id(hook), (hook, {}))[1][key] = replace
    swapped: list[tuple[Any, Mapping]] = []
    try:
        for hook, by_key in grouped.values():
            swapped.append((hook, hook.weights_map))
            hook.weights_map = _Replaced(hook.weights_map, by_key)
        yield
    finally:
        for hook, stored in reversed(swapped):
            hook.weights_map = stored
