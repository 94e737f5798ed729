"""Data sets the project writes itself, shared by probes and steering."""
