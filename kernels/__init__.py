"""Hot loops with a plain PyTorch reference and, where it pays, a fused path (steerscope.kernels).

The Triton kernel (`steerscope.kernels.triton_sq_grads`) is not imported here: it needs `triton`."""

from steerscope.kernels.per_sample_grads import LossSample, batched_fisher_scores, squared_grad_sum
from steerscope.kernels.sae_edit import SAEParts, SubsetEdit, fused_edit, reference_edit, sae_parts

__all__ = [
    "LossSample",
    "SAEParts",
    "SubsetEdit",
    "batched_fisher_scores",
    "fused_edit",
    "reference_edit",
    "sae_parts",
    "squared_grad_sum",
]
