"""The run loop of `generation run`, and what it needs around it.

  config.py          RunConfig (the options), RunSettings (resolved against the recipe), resume check
  chunking.py        splitting long sources at paragraph/sentence boundaries
  work_plan.py       sources -> chunks -> work items: keys, per-request seeds, document ids
  loop.py            the run loop: `run(config)`
  store.py           output files and the commit log that makes a run resumable
  store_recovery.py  checking committed files on open; `--repair`
  manifest.py        the manifest of one worker's output, the end-of-run summary
  merge.py           `generation merge`: combine the manifests of n workers
  cluster.py         `generation submit`: `generation run --shard i/n` as a Slurm job array

It sits above synthllm/ (graph sources, concept parsing, diversity), and text/, engine/, models/
and corpus/, and below the commands (generation/cli.py).
"""
