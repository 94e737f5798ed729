"""Parity: steerscope's SpARE against a literal, step-by-step transcription of the authors' public code.

The transcription below follows github.com/yuzhaouoe/SAE-based-representation-engineering as
read in the giacomoarienti fork: `mutual_information_and_expectation.py` (MI and expectation),
`spare_for_generation.py` (`select_functional_activations`, `load_hiddens_and_get_function_weights`,
`create_funcs`, `patch_func_signal`), `function_extraction_modellings/function_extractor.py`
(the edit) and `group_prompts.py` (the losses). It is written from scratch with plain loops,
numpy and scikit-learn, and shares no code with steerscope beyond the SAE weights it reads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig
from sklearn.feature_selection import mutual_info_classif
from sklearn.preprocessing import MinMaxScaler

import steerscope as ss
from steerscope.steering.sae import encode_pre
from steerscope.steering.spare import confidence_weights, select_features, spare_edit

D_MODEL, D_SAE, N_CONTEXT, N_MEMORY = 12, 48, 37, 23
MI_SEED = 0  # the authors leave random_state unset; both sides fix it to compare


def small_sae(kind: str, seed: int = 0) -> JumpReLUSAE | TopKSAE:
    """A small SAE with random weights: the authors' two kinds, TopK (Llama) and JumpReLU (Gemma
    Scope, which does not subtract b_dec before encoding: kind "jumprelu_raw_input")."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=D_MODEL, d_sae=D_SAE, k=6, rescale_acts_by_decoder_norm=False))
    else:
        config = JumpReLUSAEConfig(d_in=D_MODEL, d_sae=D_SAE, apply_b_dec_to_input=kind == "jumprelu")
        sae = JumpReLUSAE(config)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * (0.4 if name == "threshold" else 1))
        if kind != "topk":
            sae.threshold.abs_()
    return sae


def fixture(seed: int = 0) -> dict[str, torch.Tensor]:
    """Last-token hidden states of C and M prompts (the two groups differ along a few directions)
    and each prompt's two losses (ss: context answer, so: memory answer)."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.zeros(D_MODEL)
    shift[:3] = torch.tensor([2.5, -2.0, 1.5])
    h_c = torch.randn(N_CONTEXT, D_MODEL, generator=generator) + shift
    h_m = torch.randn(N_MEMORY, D_MODEL, generator=generator) - shift
    losses = {
        name: 0.5 + 3 * torch.rand(n, generator=generator)
        for name, n in (("c_ss", N_CONTEXT), ("c_so", N_CONTEXT), ("m_ss", N_MEMORY), ("m_so", N_MEMORY))
    }
    return {"h_c": h_c, "h_m": h_m, **losses}


# ---------------------------------------------------------------- the authors' steps, transcribed


def authors_pre_acts(sae, hidden: np.ndarray, kind: str) -> np.ndarray:
    """`sae.pre_acts(h)`: for their TopK SAE ReLU(encoder(h - b_dec)) before the top-k; their
    JumpReLU wrapper returns the sae-lens SAE's own `encode(h)`."""
    if kind != "topk":
        with torch.no_grad():
            return sae.encode(torch.from_numpy(hidden)).numpy()
    w_enc = sae.W_enc.detach().numpy()
    b_enc = sae.b_enc.detach().numpy()
    b_dec = sae.b_dec.detach().numpy()
    rows = []
    for h in hidden:
        rows.append(np.maximum((h - b_dec) @ w_enc + b_enc, 0))
    return np.stack(rows).astype(np.float32)


def authors_mi_and_expectation(acts_c: np.ndarray, acts_m: np.ndarray, equal_label_examples: bool):
    """MI of each feature with label1 = use-context, label0 = use-parameter, and the expectation."""
    label1, label0 = acts_c, acts_m
    if equal_label_examples and len(label0) != len(label1):
        num_examples = min(len(label0), len(label1))
        candidates = list(range(max(len(label0), len(label1))))
        np.random.RandomState(666).shuffle(candidates)
        selected = candidates[:num_examples]
        if len(label0) < len(label1):
            label1 = label1[selected]
        else:
            label0 = label0[selected]
    acts = np.concatenate([label1, label0])
    labels = [1] * len(label1) + [0] * len(label0)
    expectation = label1.mean(0) - label0.mean(0)
    scaled = MinMaxScaler().fit_transform(acts.astype(np.float32))
    mi = mutual_info_classif(scaled, labels, random_state=MI_SEED)
    return mi, expectation


def authors_selection(mi: np.ndarray, expectation: np.ndarray, proportion: float) -> tuple[list, list]:
    """`select_functional_activations`: count by cumulative MI, then split by expectation sign."""
    sort_indices = sorted(range(len(mi)), key=lambda i: -mi[i])
    target_mi = 0
    for value in [mi[i] for i in sort_indices]:
        target_mi += value
    target_mi *= proportion
    cumulative, count = 0, 0
    for idx in sort_indices:
        cumulative += mi[idx]
        count += 1
        if cumulative > target_mi:
            break
    use_context, use_parameter = [], []
    for idx in sort_indices:
        assert mi[idx] >= 0
        if expectation[idx] > 0:
            use_context.append(idx)
        elif expectation[idx] < 0:
            use_parameter.append(idx)
        if len(use_context) + len(use_parameter) >= count:
            break
    return use_context, use_parameter


def authors_weights(acts: np.ndarray, ss_loss: np.ndarray, so_loss: np.ndarray, group: str) -> np.ndarray:
    """`load_hiddens_and_get_function_weights`: confidence-weighted sum of pre_acts over a group."""
    weights = []
    for ss_value, so_value in zip(ss_loss, so_loss, strict=True):
        if group == "context":
            weights.append(so_value / (ss_value + so_value))
        else:
            weights.append(ss_value / (ss_value + so_value))
    weights = np.array(weights, dtype=np.float32)
    weights = weights / weights.sum()
    total = np.zeros(acts.shape[1], dtype=np.float32)
    for w, row in zip(weights, acts, strict=True):
        total += w * row
    return total


def authors_patch(
    sae, h: np.ndarray, kind: str, remove_idx, remove_weight, add_idx, add_weight
) -> np.ndarray:
    """`patch_func_signal` with two `FunctionExtractor`s: pre_acts once, subtract the remove
    function's decoded vector, add the add function's (each decode adds b_dec)."""
    w_dec = sae.W_dec.detach().numpy()
    b_dec = sae.b_dec.detach().numpy()
    acts = authors_pre_acts(sae, h[None], kind)[0]

    def function_vector(indices, weight, cap_remove: bool) -> np.ndarray:
        if kind == "topk":  # relu of the stored weights, capped per selected index, sparse decode
            top = np.maximum(np.array([weight[i] for i in indices], dtype=np.float32), 0)
            capped = [acts[i] for i in indices]
            values = np.minimum(top, capped) if cap_remove else np.maximum(top - capped, 0)
            out = b_dec.copy()
            for value, idx in zip(values, indices, strict=True):
                out = out + value * w_dec[idx]
            return out
        select_weight = np.zeros(D_SAE, dtype=np.float32)  # JumpReLU: dense codes, full decode
        for idx in indices:
            select_weight[idx] = weight[idx]
        if cap_remove:
            select_weight = np.minimum(select_weight, acts)  # clamp(max=pre_acts) over every feature
        else:
            max_to_add = np.zeros(D_SAE, dtype=np.float32)
            for idx in indices:
                max_to_add[idx] = acts[idx]
            select_weight = np.maximum(select_weight - max_to_add, 0)
        return select_weight @ w_dec + b_dec

    h = h - function_vector(remove_idx, remove_weight, cap_remove=True)
    return h + function_vector(add_idx, add_weight, cap_remove=False)


def authors_spare(
    sae, kind: str, data: dict, proportion: float, edit_degree: float, equal_label_examples: bool
):
    """Everything the authors compute for one layer: selection, targets, both edits of the fixture."""
    acts_c = authors_pre_acts(sae, data["h_c"].numpy(), kind)
    acts_m = authors_pre_acts(sae, data["h_m"].numpy(), kind)
    mi, expectation = authors_mi_and_expectation(acts_c, acts_m, equal_label_examples)
    use_context, use_parameter = authors_selection(mi, expectation, proportion)
    context_weight = authors_weights(acts_c, data["c_ss"].numpy(), data["c_so"].numpy(), "context")
    parameter_weight = authors_weights(acts_m, data["m_ss"].numpy(), data["m_so"].numpy(), "memory")
    context_func = np.zeros(D_SAE, dtype=np.float32)
    for idx in use_context:
        context_func[idx] = context_weight[idx] * edit_degree
    parameter_func = np.zeros(D_SAE, dtype=np.float32)
    for idx in use_parameter:
        parameter_func[idx] = parameter_weight[idx] * edit_degree
    probes = np.concatenate([data["h_c"].numpy()[:6], data["h_m"].numpy()[:6]])
    to_memory = [
        authors_patch(sae, h, kind, use_context, context_func, use_parameter, parameter_func) for h in probes
    ]
    to_context = [
        authors_patch(sae, h, kind, use_parameter, parameter_func, use_context, context_func) for h in probes
    ]
    return {
        "S_C": use_context,
        "S_M": use_parameter,
        "target_C": context_weight,
        "target_M": parameter_weight,
        "mi": mi,
        "probes": probes,
        "memory": np.stack(to_memory),
        "context": np.stack(to_context),
    }


# ---------------------------------------------------------------- steerscope on the same fixture


def on_last_token(edit, h: torch.Tensor) -> torch.Tensor:
    """Apply an edit to rows h [n, d] as n one-token prompts."""
    tokens = ss.TokenInfo(
        torch.zeros(len(h), 1, dtype=torch.long),
        torch.ones(len(h), 1, dtype=torch.bool),
        torch.ones(len(h), dtype=torch.long),
    )
    return edit(h[:, None, :], tokens)[:, 0]


@pytest.mark.parametrize("kind", ["jumprelu", "jumprelu_raw_input", "topk"])
@pytest.mark.parametrize(
    ("proportion", "edit_degree", "balance"), [(0.07, 2.0, False), (0.3, 1.0, True), (0.6, 3.0, False)]
)
def test_steerscope_spare_equals_the_authors_steps(kind, proportion, edit_degree, balance) -> None:
    sae, data = small_sae(kind), fixture()
    expected = authors_spare(sae, kind, data, proportion, edit_degree, balance)
    z_c, z_m = encode_pre(sae, data["h_c"]), encode_pre(sae, data["h_m"])
    selection = select_features(
        z_c,
        z_m,
        p=proportion,
        weights_C=confidence_weights(data["c_ss"], data["c_so"], "context"),
        weights_M=confidence_weights(data["m_ss"], data["m_so"], "memory"),
        balance=balance,
        random_state=MI_SEED,
    )
    assert selection.estimator == "mutual_info_classif"
    assert len(expected["S_C"]) + len(expected["S_M"]) >= 2  # the fixture selects something
    assert selection.S_C.tolist() == expected["S_C"]
    assert selection.S_M.tolist() == expected["S_M"]
    np.testing.assert_allclose(selection.mi.numpy(), expected["mi"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(selection.target_C.numpy(), expected["target_C"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(selection.target_M.numpy(), expected["target_M"], rtol=1e-5, atol=1e-5)
    probes = torch.from_numpy(expected["probes"])
    for direction in ("memory", "context"):
        assert np.abs(expected[direction] - expected["probes"]).max() > 0.1  # the edit does something
        for fused in (True, False):
            got = on_last_token(spare_edit(sae, selection, direction, edit_degree, fused=fused), probes)
            np.testing.assert_allclose(got.numpy(), expected[direction], rtol=1e-5, atol=1e-5)
