"""The experiments, one package each (`config`: its settings, `phases`: its steps, each a function a
notebook can call on its own, `report`: what it writes; `run` in its `__init__` is the list of its
phases). Every package registers itself (`steerscope.registry`) and the runner finds them without a
list (`steerscope.runner.discover_experiments`); no experiment imports another: what two share
lives in `steerscope.probes`, `steerscope.steering` or the core. Run one with
`steerscope.run_experiment` (this package imports nothing, so the runner can load it)."""
