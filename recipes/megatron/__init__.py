"""The megatron-core backend: megatron-core's GPTModel (the class Megatron-Bridge builds) trained
with megatron's DDP, optimizer, LR scheduler, pipeline schedules and distributed checkpoints, at
any tensor x pipeline x data parallel layout, over gloo on CPU or nccl on GPU.

  parallel.py    init_distributed(tensor_parallel, pipeline_parallel): process group, parallel state
  model.py       the GPTModel of a run's shape (local layer spec, layout-independent init)
  trainer.py     train(run_dir, spec, stop_after_minutes) and evaluate(run_dir, spec, domains)
  checkpoint.py  megatron dist_checkpointing under RUN/checkpoints (resharding across layouts)
  cpu_shims.py   every CUDA shim megatron-core needs on a CPU, version-checked
  entry.py       `python -m recipes.megatron.entry`: one run's stages under torchrun
"""
