import os
import subprocess
import sys

import pytest
import torch

from steerscope.errors import InputError
from steerscope.kernels.per_sample_grads import batched_fisher_scores, pad_batch, squared_grad_sum
from steerscope.probes import fisher
from steerscope.probes.fisher import LossSample, cached_fisher_scores, fisher_scores

RTOL = 1e-5


def _samples(vocab: int) -> list[LossSample]:
    """Seven samples of lengths 3..16 (longer than the tiny Gemma's sliding window of 8) with
    partial loss masks: answer-only, scattered tokens and a full generic window."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for i, n in enumerate((9, 16, 3, 12, 7, 14, 5)):
        ids = torch.randint(4, vocab, (n,), generator=generator)
        if i == 0:
            samples.append(LossSample.all_positions(ids))
            continue
        mask = torch.rand(n, generator=generator) < 0.4
        mask[0], mask[-1] = False, True
        samples.append(LossSample(ids, mask))
    return samples


def _max_relative_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """max over matrices of max|got - want| / max|want|."""
    assert got.keys() == want.keys()
    return max(float((got[n] - want[n]).abs().max() / want[n].abs().max()) for n in want)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_batched_fisher_equals_the_batch_size_one_loop(family, padding_side):
    from steerscope.tiny import tiny_model

    model = tiny_model(family)
    samples = _samples(len(model.tokenizer))
    reference = fisher_scores(model, samples, progress=False)

    batched = batched_fisher_scores(model, samples, batch_size=4, padding_side=padding_side, progress=False)

    assert list(batched) == list(reference)
    assert all(s.dtype == torch.float32 for s in batched.values())
    assert _max_relative_error(batched, reference) < RTOL


def test_batch_size_and_chunk_do_not_change_the_result(tiny_gemma):
    samples = _samples(len(tiny_gemma.tokenizer))
    runs = [
        batched_fisher_scores(tiny_gemma, samples, batch_size=b, chunk=c, progress=False)
        for b, c in ((7, 1), (7, 7), (3, 2), (1, 1))
    ]
    for run in runs[1:]:
        assert _max_relative_error(run, runs[0]) < RTOL


def test_squared_grad_sum_is_per_sample_outer_products_squared():
    generator = torch.Generator().manual_seed(1)
    delta, x = torch.randn(5, 6, 3, generator=generator), torch.randn(5, 6, 4, generator=generator)
    expected = sum((delta[b].T @ x[b]).square() for b in range(5))
    for chunk in (1, 2, 5, 9):
        assert torch.allclose(squared_grad_sum(delta, x, chunk, torch.zeros(3, 4)), expected, rtol=1e-6)


def test_batched_fisher_is_not_the_squared_batch_gradient(tiny_llama):
    samples = _samples(len(tiny_llama.tokenizer))
    names = list(tiny_llama.anatomy.linear_weights().values())
    params = dict(tiny_llama.hf.named_parameters())
    batch_gradient = torch.autograd.grad(
        sum(fisher.sample_loss(tiny_llama.hf, s) for s in samples), [params[n] for n in names]
    )

    scores = batched_fisher_scores(tiny_llama, samples, progress=False)

    for name, grad in zip(names, batch_gradient, strict=True):
        assert not torch.allclose(scores[name], grad.square(), rtol=1e-2), name


def test_batched_fisher_restores_flags_mode_and_hooks_and_writes_no_grad(tiny_llama):
    hf = tiny_llama.hf
    hf.train()
    hf.model.embed_tokens.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in hf.named_parameters()}

    batched_fisher_scores(tiny_llama, _samples(len(tiny_llama.tokenizer)), progress=False)

    assert hf.training
    assert {n: p.requires_grad for n, p in hf.named_parameters()} == flags
    assert all(p.grad is None for p in hf.parameters())
    assert not any(m._forward_hooks for m in hf.modules())


def test_batched_fisher_restores_everything_when_the_forward_fails(tiny_llama):
    hf = tiny_llama.hf
    flags = {n: p.requires_grad for n, p in hf.named_parameters()}

    def fail(*_args):
        raise RuntimeError("boom")

    handle = hf.model.layers[2].register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        batched_fisher_scores(tiny_llama, _samples(len(tiny_llama.tokenizer)), progress=False)
    handle.remove()

    assert not hf.training
    assert {n: p.requires_grad for n, p in hf.named_parameters()} == flags
    assert not any(m._forward_hooks for m in hf.modules())


def test_pad_batch_gives_each_sample_its_own_positions_and_masks_pads():
    samples = [
        LossSample(torch.tensor([5, 6, 7]), torch.tensor([False, False, True])),
        LossSample(torch.tensor([5, 6, 7, 8, 9]), torch.tensor([False, True, False, True, True])),
    ]
    left = pad_batch(samples, "left")
    assert left["position_ids"][0, 2:].tolist() == [0, 1, 2]
    assert left["attention_mask"][0].tolist() == [False, False, True, True, True]
    assert left["loss_mask"][0].tolist() == [False, False, False, False, True]
    right = pad_batch(samples, "right")
    assert right["position_ids"][0, :3].tolist() == [0, 1, 2]
    assert right["loss_mask"][0].tolist() == [False, False, True, False, False]
    with pytest.raises(InputError, match="padding_side must be one of"):
        pad_batch(samples, "middle")


def test_cached_fisher_uses_the_batched_path_by_default_and_checks_the_method(
    tiny_llama, tmp_path, monkeypatch
):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    samples = _samples(len(tiny_llama.tokenizer))[:3]

    def loop_must_not_run(*args, **kwargs):
        raise AssertionError("the batch-size-1 loop ran")

    monkeypatch.setattr(fisher, "fisher_scores", loop_must_not_run)
    cached_fisher_scores(tiny_llama, samples, {"data": "x"}, progress=False)
    with pytest.raises(InputError, match="method must be one of"):
        cached_fisher_scores(tiny_llama, samples, {"data": "y"}, method="fast")


_TRITON_CHECK = """
import torch
from steerscope.kernels.per_sample_grads import squared_grad_sum
from steerscope.kernels.triton_sq_grads import triton_squared_grad_sum

generator = torch.Generator().manual_seed(2)
for batch, seq, d_out, d_in in ((3, 5, 20, 37), (2, 17, 33, 16), (1, 40, 64, 48)):
    delta = torch.randn(batch, seq, d_out, generator=generator)
    x = torch.randn(batch, seq, d_in, generator=generator)
    expected = squared_grad_sum(delta, x, 2, torch.zeros(d_out, d_in))
    start = torch.rand(d_out, d_in, generator=generator)
    got = triton_squared_grad_sum(delta, x, start.clone())
    assert torch.allclose(got, start + expected, rtol=1e-5, atol=1e-6), (batch, seq, d_out, d_in)
print("ok")
"""


def test_triton_kernel_matches_the_torch_reference_in_the_interpreter():
    pytest.importorskip("triton", reason="triton is not installed (pip install triton==3.9.0)")
    # TRITON_INTERPRET is read when triton and the kernel are first imported, which may already
    # have happened in this process (transformers imports triton), so the check runs in its own.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _TRITON_CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
