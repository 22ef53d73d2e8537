"""recipes: train Llama-3-style models over the (N, D, mixture) grid and record the losses.

Modules, in reading order: `shapes` (model shapes and exact N), `recipe` (Table 2
hyperparameters, schedule, train-iteration arithmetic), `run_spec` (one run, its id and the
blend checks), `parallelism` (TP/PP/DP rules), `bridge_config` (Megatron-Bridge YAML),
`launchers` (NeMo-Run), `evaluation` (the windows every backend scores), `megatron/` (the
megatron-core backend: CPU over gloo or GPUs), `bridge_entry`, `run_stages` (the staged run both
share), `results` (results.json and the table), `sweep` and `cli`.
"""
