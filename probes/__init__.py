"""What reads the model: ToM sensitivity, RoPE analysis, conflict probes (steerscope.probes)."""
