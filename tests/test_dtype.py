"""`--dtype` / `run_experiment(dtype=...)`: the model runs in the dtype asked for, results.json
records it, and what is accumulated (captured statistics, Fisher scores, steering means) is fp32."""

import json

import pytest
import torch

import steerscope as ss
from steerscope.capture import tokenize
from steerscope.cli import main
from steerscope.errors import InputError
from steerscope.kernels.per_sample_grads import batched_fisher_scores
from steerscope.probes.fisher import LossSample
from steerscope.runner import run_experiment
from steerscope.steering import diff_of_means
from steerscope.tiny import tiny_model

PROMPTS = ["The cat sat on the mat.", "A dog", "Birds fly south in the winter months."]


def test_cli_run_in_bfloat16_runs_the_model_in_it_and_records_it(tmp_path):
    assert main(["run", "smoke", "--model", "tiny:llama", "--dtype", "bfloat16", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dtype"] == "bfloat16"
    run_experiment("smoke", tmp_path / "fp32", model="tiny:llama")
    assert json.loads((tmp_path / "fp32" / "results.json").read_text())["dtype"] == "float32"


def test_unknown_dtype_fails_in_one_line_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "smoke", "--model", "tiny:llama", "--dtype", "float8", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "steerscope: error: dtype: unsupported dtype 'float8'; valid: float32, bfloat16, float16"
    assert not out.exists()


def test_dtype_given_with_a_model_object_must_be_its_own(tmp_path):
    model = tiny_model("llama")
    with pytest.raises(InputError, match=r"dtype=bfloat16 was given with a model object in torch.float32"):
        run_experiment("smoke", tmp_path, model=model, dtype="bfloat16")
    run_experiment("smoke", tmp_path, model=model, dtype="float32")
    assert json.loads((tmp_path / "results.json").read_text())["dtype"] == "float32"


def test_bf16_capture_is_the_model_activation_cast_up_and_means_accumulate_in_fp32():
    model = tiny_model("llama", dtype=torch.bfloat16)
    batch = tokenize(model, PROMPTS)
    with torch.no_grad():
        hidden = model.hf(**batch, output_hidden_states=True).hidden_states[2]  # after layer 1
    full = ss.capture(model, PROMPTS, "L1.resid_post")
    mean = ss.capture(model, PROMPTS, "L1.resid_post", reduce="mean")
    assert hidden.dtype == torch.bfloat16 and full["L1.resid_post"].dtype == torch.float32
    assert torch.equal(full["L1.resid_post"], hidden.float())  # exact: casting up loses nothing
    real = batch["attention_mask"][..., None].float()
    expected = (hidden.float() * real).sum(1) / real.sum(1)
    torch.testing.assert_close(mean["L1.resid_post"], expected, rtol=1e-6, atol=1e-6)
    vector = diff_of_means(model, PROMPTS[:2], PROMPTS[1:], "L1.resid_post")
    assert vector.directions["L1.resid_post"].dtype == torch.float32


def test_bf16_fisher_scores_accumulate_in_fp32():
    """The scores of all samples equal the sum of each sample's scores to fp32 precision: a sum
    kept in bf16 (8 significant bits) would be off by about 0.4% per addition."""
    model = tiny_model("llama", dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    samples = [LossSample.all_positions(torch.randint(3, 90, (12,), generator=generator)) for _ in range(8)]
    together = batched_fisher_scores(model, samples, batch_size=4, progress=False)
    alone = [batched_fisher_scores(model, [s], batch_size=1, progress=False) for s in samples]
    for name, score in together.items():
        assert score.dtype == torch.float32
        summed = torch.stack([a[name] for a in alone]).sum(0)
        torch.testing.assert_close(score, summed, rtol=1e-5, atol=1e-12)
