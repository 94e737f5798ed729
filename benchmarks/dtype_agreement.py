"""Do bf16 and fp32 give the same ToM-sensitive masks, and how much faster is the Fisher pass in bf16?

Loads the embedded Gemma 3 270M in each dtype, computes the tom-sensitivity Fisher scores (batched
path; `--n` ToM stories with the loss on the answer, `--n` generic 128-token windows) in each,
and compares the masks top_k(F_tom) AND NOT top_k(F_generic) at each fraction m: Jaccard overlap
|A & B| / |A | B| over all matrices, and the counts. The scores are accumulated in fp32 in both
(the bf16 model's gradients are cast up where they are squared and summed).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dtype_agreement.py [--n 24] [--json F]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

import steerscope as ss
from steerscope.data.generic import generic_windows
from steerscope.data.tom import tom_mixture
from steerscope.kernels.per_sample_grads import batched_fisher_scores
from steerscope.probes.fisher import LossSample
from steerscope.probes.masks import sensitive_masks
from steerscope.probes.tom_fisher import tom_fisher_samples

sys.path.insert(0, str(Path(__file__).parent))
from interleaved import finish  # noqa: E402

SPARSITIES = (3e-6, 1e-5, 3e-5, 1e-4)
DTYPES = ("float32", "bfloat16")


def jaccard(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, int, int, int]:
    """(|A & B| / |A | B|, |A|, |B|, |A & B|) over every matrix of two mask sets."""
    both = sum(int((a[n] & b[n]).sum()) for n in a)
    either = sum(int((a[n] | b[n]).sum()) for n in a)
    return (
        (both / either if either else 1.0),
        sum(int(m.sum()) for m in a.values()),
        sum(int(m.sum()) for m in b.values()),
        both,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=24, help="samples per data set (tom-sensitivity --quick: 24)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    scores, seconds = {}, {}
    for dtype in DTYPES:
        model = ss.load(dtype=dtype)
        tom = tom_fisher_samples(model, tom_mixture("fisher", args.n, seed=0))
        generic = [
            LossSample.all_positions(torch.tensor(w))
            for w in generic_windows(model.tokenizer, args.n, 128, 0, split="fisher", bos=True)
        ]
        start = time.perf_counter()
        tom_f = batched_fisher_scores(model, tom, progress=False)
        generic_f = batched_fisher_scores(model, generic, batch_size=4, progress=False)
        seconds[dtype] = round(time.perf_counter() - start, 1)
        assert all(s.dtype == torch.float32 for s in [*tom_f.values(), *generic_f.values()])
        scores[dtype] = (tom_f, generic_f)
        del model
    rows = []
    for sparsity in SPARSITIES:
        masks = {dtype: sensitive_masks(*scores[dtype], sparsity) for dtype in DTYPES}
        overlap, n32, n16, both = jaccard(masks["float32"], masks["bfloat16"])
        rows.append(
            {"m": sparsity, "jaccard": round(overlap, 4), "float32": n32, "bfloat16": n16, "in_both": both}
        )
    results = {
        "n_samples_per_set": args.n,
        "fisher_seconds": seconds,
        "bf16_speedup": round(seconds["float32"] / seconds["bfloat16"], 2),
        "masks": rows,
        "torch_threads": torch.get_num_threads(),
    }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
