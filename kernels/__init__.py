"""Hot loops with a plain PyTorch reference and, where it pays, a fused path (steerscope.kernels)."""
