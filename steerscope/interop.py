"""Interop with TransformerLens: steerscope edits on a HookedTransformer, and offline builders.

`intervene` and `capture` already accept nnsight models and TransformerBridges (they unwrap to
the transformers model and hook it). A HookedTransformer has no transformers modules, so
`hooked_transformer_edits` installs the same edits on its own HookPoints instead.
`hooked_transformer_from` and `bridge_from` build either TransformerLens model from a steerscope
`Model` without touching the hub, so the three can be compared activation for activation.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers import AutoTokenizer

from steerscope.errors import InputError
from steerscope.intervene import Edit, EditSpec, edit_list, merge_head, run_edits, select_head
from steerscope.model import Model, ModelLike, as_model
from steerscope.sites import SITE_KINDS, Site
from steerscope.tokens import TokenInfo, TokenTracker, call_mask, past_length

HOOKED_TRANSFORMER_FAMILIES = ("llama", "gemma3")


def _validate(site: Site, cfg: Any) -> Site:
    """Check a site against a HookedTransformer config (it has no steerscope `Anatomy`)."""
    if site.layer >= cfg.n_layers:
        raise InputError(
            f"site {site}: layer {site.layer} out of range; this model has layers 0-{cfg.n_layers - 1}"
        )
    if site.head is not None:
        kv = SITE_KINDS[site.kind].kv_heads
        n = (cfg.n_key_value_heads or cfg.n_heads) if kv else cfg.n_heads
        if site.head >= n:
            what = "KV heads" if kv else "query heads"
            raise InputError(f"site {site}: head {site.head} out of range; this model has {n} {what}")
    if site.kind in ("q", "k") and getattr(cfg, "use_qk_norm", False):
        raise InputError(
            f"site {site}: HookedTransformer's hook_{site.kind} comes before the QK norm, steerscope's "
            f"{site.kind} after it, so they differ on this model; use {site.kind}_rope instead"
        )
    return site


class _HookedTracker:
    """Produces each HookedTransformer forward call's `TokenInfo` from pre-hooks on its blocks.

    A call starts at the first block that runs (block index not above the previous one). The
    block's input residual stands in for token ids when recognising a cache-less continuation:
    `generate(use_past_kv_cache=False)` re-feeds the same prompt embeddings with new ones appended.
    """

    def __init__(self) -> None:
        self.tracker = TokenTracker()
        self._last_block = -1

    def pre_hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if index > self._last_block and self.tracker.current is not None:
                self._last_block = index
                return
            self._last_block = index
            resid = kwargs["resid_pre"] if "resid_pre" in kwargs else args[0]
            entry = kwargs.get("past_kv_cache_entry", args[2] if len(args) > 2 else None)
            mask = call_mask(kwargs.get("attention_mask", args[3] if len(args) > 3 else None), resid.device)
            past = int(past_length(mask, resid.shape[1], entry))
            self.tracker.observe(
                resid.detach(),
                mask,
                n_new=resid.shape[1],
                batch=resid.shape[0],
                past_length=past,
                device=resid.device,
            )

        return hook

    def tokens(self, device: torch.device) -> TokenInfo:
        if self.tracker.current is None:
            raise RuntimeError("steerscope saw no transformer block run before a hook point")
        return self.tracker.current.to(device)


def _hook_fn(site: Site, edits: Sequence[Edit], tracker: _HookedTracker) -> Callable[..., Tensor | None]:
    """A HookPoint function running `edits` on the site's slice of the activation."""
    kind = SITE_KINDS[site.kind]
    axis = kind.head_axis or 0  # a site without heads selects none

    def hook(act: Tensor, hook: Any) -> Tensor | None:
        part = select_head(act, site, axis)
        new = run_edits(site, part, edits, tracker.tokens(act.device))
        if new is part:
            return None
        if not kind.editable:
            raise InputError(f"site {site}: {site.kind} is read-only; edit q_rope or k_rope instead")
        return merge_head(act, new, site, axis)

    return hook


@contextmanager
def hooked_transformer_edits(ht: Any, edits: EditSpec) -> Iterator[None]:
    """Install steerscope edits ({site: edit or [edits]}) on a HookedTransformer's HookPoints.

    Sites map to `blocks.{layer}.hook_*` / `blocks.{layer}.attn.hook_*` (`SiteKind.transformer_lens`); per-head
    sites select the head axis. Edits receive a `TokenInfo` like under `intervene`. Limits: token
    bookkeeping comes from the blocks' inputs, so a call with a past KV cache is a continuation of
    the last prompt, a cache-less call is one only if it starts with the remembered prompt's
    residual (as `generate(use_past_kv_cache=False)` does); padding is known only when the model
    passes an attention mask to its blocks (left-padded string batches); calls that skip all
    blocks never reach an edit. `q`/`k` fail on QK-norm models (Gemma 3), whose `hook_q`/`hook_k`
    precede the norm. Hooks are removed on exit, exceptions included.
    """
    plan: dict[Site, list[Edit]] = {}
    for key, value in edits.items():
        site = _validate(Site.parse(key), ht.cfg)
        plan.setdefault(site, []).extend(edit_list(value))
    tracker = _HookedTracker()
    fwd_hooks = [
        (f"blocks.{site.layer}.{SITE_KINDS[site.kind].transformer_lens}", _hook_fn(site, site_edits, tracker))
        for site, site_edits in plan.items()
    ]
    handles: list[RemovableHandle] = []
    try:
        for index, block in enumerate(ht.blocks):
            handles.append(block.register_forward_pre_hook(tracker.pre_hook(index), with_kwargs=True))
        with ht.hooks(fwd_hooks=fwd_hooks):
            yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _reloadable_tokenizer(tokenizer: Any) -> Iterator[Any]:
    """The tokenizer reloaded from a temporary folder that exists for the block.

    TransformerLens re-runs `AutoTokenizer.from_pretrained(tokenizer.name_or_path, ...)` to add a
    BOS token; an in-memory tokenizer has no such path and a hub name would need the network.
    """
    with tempfile.TemporaryDirectory(prefix="steerscope-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        yield AutoTokenizer.from_pretrained(folder)


def _rope_base(rope_parameters: dict, layer_type: str) -> float:
    """The rope_theta of one layer type; scaled RoPE variants are not converted."""
    params = rope_parameters.get(layer_type, rope_parameters)
    if params.get("rope_type", "default") != "default":
        raise InputError(
            f"rope_type {params['rope_type']!r} ({layer_type}) is not supported by hooked_transformer_from; "
            "only unscaled RoPE converts exactly"
        )
    return float(params["rope_theta"])


def _hooked_config(model: Model) -> Any:
    """A HookedTransformerConfig equal to the model's architecture (no weight processing)."""
    from transformer_lens import HookedTransformerConfig

    hf, anatomy = model.hf, model.anatomy
    text = hf.config.get_text_config(decoder=True)
    parameter = next(hf.parameters())
    rope = getattr(text, "rope_parameters", None) or {"rope_theta": getattr(text, "rope_theta", 10000.0)}
    common: dict[str, Any] = dict(
        d_model=anatomy.d_model,
        d_head=anatomy.head_dim,
        n_heads=anatomy.n_heads,
        n_key_value_heads=anatomy.n_kv_heads,
        d_mlp=anatomy.d_mlp,
        n_layers=anatomy.n_layers,
        n_ctx=text.max_position_embeddings,
        d_vocab=anatomy.vocab_size,
        eps=text.rms_norm_eps,
        normalization_type="RMS",
        final_rms=True,
        gated_mlp=True,
        positional_embedding_type="rotary",
        rotary_dim=anatomy.head_dim,
        rotary_adjacent_pairs=False,
        device=str(parameter.device),
        dtype=parameter.dtype,
    )
    if anatomy.family.name == "llama":
        if getattr(text, "attention_bias", False) or getattr(text, "mlp_bias", False):
            raise InputError("hooked_transformer_from: llama models with biases are not supported")
        return HookedTransformerConfig(
            **common,
            act_fn=text.hidden_act,
            rotary_base=_rope_base(rope, "full_attention"),
            original_architecture="LlamaForCausalLM",
        )
    layer_types = anatomy.layer_types
    softcaps = {
        "attn_scores_soft_cap": getattr(text, "attn_logit_softcapping", None),
        "output_logits_soft_cap": getattr(text, "final_logit_softcapping", None),
    }
    return HookedTransformerConfig(
        **common,
        **{name: float(value) for name, value in softcaps.items() if value is not None},
        act_fn=text.hidden_activation,
        rotary_base=_rope_base(rope, "full_attention"),
        rotary_base_local=_rope_base(rope, "sliding_attention"),
        attn_scale=text.query_pre_attn_scalar**0.5,
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        use_local_attn=True,
        window_size=text.sliding_window,
        attn_types=["local" if t == "sliding_attention" else "global" for t in layer_types],
        original_architecture="Gemma3ForCausalLM",
    )


def hooked_transformer_from(model: ModelLike) -> Any:
    """An offline HookedTransformer with the weights of a llama or gemma3 steerscope model.

    `HookedTransformer.from_pretrained` reads sizes from tables keyed by official names, so it
    cannot load custom or tiny models; this writes the config by hand and runs TransformerLens'
    weight converter. No processing (fold_ln, centering) is applied, so activations match the
    transformers model's. The user's model is only read.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading

    loaded = as_model(model)
    family = loaded.anatomy.family.name
    if family not in HOOKED_TRANSFORMER_FAMILIES:
        raise InputError(
            f"hooked_transformer_from supports families {', '.join(HOOKED_TRANSFORMER_FAMILIES)}; "
            f"got {family!r}"
        )
    cfg = _hooked_config(loaded)
    convert = loading.convert_llama_weights if family == "llama" else loading.convert_gemma_weights
    state = convert(loaded.hf, cfg)
    if loaded.tokenizer is None:
        ht = HookedTransformer(copy.deepcopy(cfg))
    else:
        with _reloadable_tokenizer(loaded.tokenizer) as tokenizer:
            ht = HookedTransformer(copy.deepcopy(cfg), tokenizer=tokenizer)
    ht.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    return ht.eval()


def bridge_from(model: ModelLike) -> Any:
    """A TransformerBridge booted offline from a copy of a steerscope model.

    Booting swaps bridge wrappers into the transformers model it is given, so it gets a deep copy
    and the user's model stays untouched. The adapter is chosen from `config.architectures`, which
    configs built in code lack (and `gemma3_text` is not in TransformerLens' fallback table), so
    the class name is passed as an override.
    """
    from transformer_lens.model_bridge import TransformerBridge

    loaded = as_model(model)
    if loaded.tokenizer is None:
        raise InputError("bridge_from needs a tokenizer; the model has none")
    hf = copy.deepcopy(loaded.hf)
    parameter = next(hf.parameters())
    with _reloadable_tokenizer(loaded.tokenizer) as tokenizer:
        return TransformerBridge.boot_transformers(
            loaded.source or type(hf).__name__,
            hf_model=hf,
            tokenizer=tokenizer,
            device=str(parameter.device),
            dtype=parameter.dtype,
            hf_config_overrides={"architectures": [type(hf).__name__]},
        )
