"""Compiled models: how to tell that a model runs compiled, and how steerscope's Python reaches it.

`torch.compile` traces a forward call once into a graph and replays it while its guards hold. By
default (torch 2.13, `torch._dynamo.config.skip_nnmodule_hook_guards`) no guard watches a
module's hooks, so a hook registered after a graph was traced is never called, and the same
graph serves every instance of the model's class. What the guards do watch is whether a module
has its own `forward` attribute (and which function it is). So steerscope changes a module by
setting its `forward` to a wrapper around the one it had, as accelerate's hooks do: a graph traced
before no longer matches and is traced again with the wrapper in it, and once the wrapper is
removed the graphs traced with it no longer match either. Nothing is ever silently skipped.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from steerscope.model import uncompiled

Forward = Callable[..., Any]
#: Wraps a module's call: `body(inner, *args, **kwargs)` runs the wrapped forward as `inner`.
Body = Callable[..., Any]

_LINK = "_steerscope_link"
_ACCELERATORS = ("cuda", "xpu", "neuron", "tpu")  # where transformers compiles static-cache decoding


def wrap_forward(module: nn.Module, body: Body) -> Forward:
    """Set `module.forward` to a wrapper calling `body(inner, *args, **kwargs)`, with `inner` the
    forward the module had (its class's, or a wrapper already set); returns the wrapper, which
    `unwrap_forward` removes. Wrappers stack; each may be removed in any order."""
    own = module.__dict__.get("forward")
    # [what it wraps, its body (None: pass through), whether that is the class's forward]
    link: list[Any] = [
        own if own is not None else types.MethodType(type(module).forward, module),
        body,
        own is None,
    ]

    def forward(*args: Any, **kwargs: Any) -> Any:
        run = link[1]
        return link[0](*args, **kwargs) if run is None else run(link[0], *args, **kwargs)

    setattr(forward, _LINK, link)
    module.forward = forward
    return forward


def unwrap_forward(module: nn.Module, wrapper: Forward) -> None:
    """Take `wrapper` (from `wrap_forward`) out of `module.forward`'s chain.

    On top, the module gets back the forward it had (none of its own: the class's). Under another
    steerscope wrapper, that one is relinked past it. Under a foreign one (which holds it), it stays
    in place but only passes calls through."""
    link = getattr(wrapper, _LINK)
    above = module.__dict__.get("forward")
    if above is wrapper:
        if link[2]:
            del module.forward
        else:
            module.forward = link[0]
        return
    while above is not None and hasattr(above, _LINK):
        above_link = getattr(above, _LINK)
        if above_link[0] is wrapper:
            above_link[0], above_link[2] = link[0], link[2]
            return
        above = above_link[0]
    link[1] = None


def wrappers_of(module: nn.Module) -> list[Forward]:
    """steerscope's wrappers in `module.forward`'s chain, outermost first (up to a foreign one)."""
    found = []
    forward = module.__dict__.get("forward")
    while forward is not None and hasattr(forward, _LINK):
        found.append(forward)
        link = getattr(forward, _LINK)
        forward = None if link[2] else link[0]
    return found


def leaves_graph(before: Callable[[tuple, dict], None] | None = None) -> Body:
    """A wrapper body (see `wrap_forward`) that passes calls through, except while a compiler
    traces the call: then the call runs as an opaque function (a graph break), so `before(args,
    kwargs)`, the wrapped forward and the hooks of every module it calls run eagerly and exactly.
    Outside compilation it costs one Python call."""

    def escape(inner: Forward, *args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(args, kwargs)
        return inner(*args, **kwargs)

    opaque = torch.compiler.disable(escape)

    def body(inner: Forward, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return opaque(inner, *args, **kwargs)
        return inner(*args, **kwargs)

    return body


def _is_compiled_function(function: Any) -> bool:
    """Whether `function` (or what steerscope's wrappers around it call) is `torch.compile`d."""
    while function is not None and hasattr(function, _LINK):
        function = getattr(function, _LINK)[0]
    return hasattr(function, "_torchdynamo_orig_callable") and not getattr(
        function, "_torchdynamo_disable", False
    )


def compiled_modules(root: nn.Module, prefix: str = "model.hf") -> list[str]:
    """The modules under `root` whose calls run compiled: `module.compile()` (it keeps the compiled
    call on the instance) or a `torch.compile`d `forward` set on it; as `prefix.path` strings."""
    found = []
    for name, module in root.named_modules():
        where = f"{prefix}.{name}" if name else prefix
        if module.__dict__.get("_compiled_call_impl") is not None:
            found.append(f"{where}.compile()")
        elif _is_compiled_function(module.__dict__.get("forward")):
            found.append(f"{where}.forward = torch.compile(...)")
    return found


def transformers_compiles(hf: nn.Module) -> str | None:
    """Why transformers' `generate` compiles this model's decoding step, or None: it did before
    (it keeps the compiled call on the model), or its generation config asks for a static cache on
    an accelerator or with `compile_config` allowing every device (`_valid_auto_compile_criteria`)."""
    if "_compiled_call" in hf.__dict__:
        return "transformers compiled its decoding step in an earlier generate() (static cache)"
    config = getattr(hf, "generation_config", None)
    if config is None or getattr(config, "disable_compile", False):
        return None
    compile_config = getattr(config, "compile_config", None)
    everywhere = compile_config is not None and getattr(compile_config, "_compile_all_devices", False)
    device = next(hf.parameters()).device.type
    if getattr(config, "cache_implementation", None) in ("static", "offloaded_static") and (
        everywhere or device in _ACCELERATORS
    ):
        where = "compile_config for every device" if everywhere else f"on {device}"
        return f"transformers compiles decoding (generation_config: static cache, {where})"
    return None


def how_compiled(given: Any, hf: nn.Module) -> str | None:
    """One line saying how the model runs compiled (`given` as the user passed it, `hf` the
    transformers module inside), or None when nothing shows that it does."""
    wrapped = getattr(given, "hf", given)
    if uncompiled(wrapped) is not wrapped:
        return "the model is torch.compile(model.hf)"
    modules = compiled_modules(hf)
    if modules:
        return f"{modules[0]} compiles it"
    return transformers_compiles(hf)
