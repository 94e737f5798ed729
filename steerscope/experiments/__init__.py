"""The experiments, one module each. Every module registers itself (`steerscope.registry`) and the
runner finds them without a list (`steerscope.runner.discover_experiments`); no experiment
imports another: what two share lives in `steerscope.probes` or `steerscope.steering`. Run one with
`steerscope.run_experiment` (this package imports nothing, so the runner can load it)."""
