"""Do the batched and the per-sample-loop Fisher paths give the same tom-sensitivity masks?

Computes the batched scores on the tom-sensitivity default data (100 ToM stories, 100 generic
128-token windows) and compares the masks at each sparsity with the loop scores, which
`cached_fisher_scores(..., method="loop")` reads from (or writes to) the cache.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fisher_masks.py [--n 100]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import steerscope as ss
from steerscope.data.generic import generic_windows
from steerscope.data.tom import tom_mixture
from steerscope.kernels.per_sample_grads import batched_fisher_scores
from steerscope.probes.fisher import LossSample, cached_fisher_scores
from steerscope.probes.masks import mask_counts, sensitive_masks
from steerscope.probes.tom_fisher import tom_fisher_samples

SPARSITIES = (3e-6, 1e-5, 3e-5, 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=100, help="samples per data set (tom-sensitivity default 100)"
    )
    args = parser.parse_args()
    model = ss.load()
    tom = tom_fisher_samples(model, tom_mixture("fisher", args.n, seed=0))
    generic = [
        LossSample.all_positions(torch.tensor(w))
        for w in generic_windows(model, args.n, 128, 0, split="fisher", bos=True)
    ]
    loop_tom = cached_fisher_scores(model, tom, {"data": "tom", "seed": 0}, method="loop")
    loop_generic = cached_fisher_scores(model, generic, {"data": "generic"}, method="loop")
    start = time.perf_counter()
    batched_tom = batched_fisher_scores(model, tom, progress=False)
    batched_generic = batched_fisher_scores(model, generic, batch_size=4, progress=False)
    rows = []
    for sparsity in SPARSITIES:
        loop = sensitive_masks(loop_tom, loop_generic, sparsity)
        batched = sensitive_masks(batched_tom, batched_generic, sparsity)
        differing = sum(int((loop[name] ^ batched[name]).sum()) for name in loop)
        rows.append(
            {
                "sparsity": sparsity,
                "loop": mask_counts(loop),
                "batched": mask_counts(batched),
                "differing": differing,
            }
        )
    print(json.dumps({"batched_seconds": round(time.perf_counter() - start, 1), "masks": rows}, indent=2))


if __name__ == "__main__":
    main()
