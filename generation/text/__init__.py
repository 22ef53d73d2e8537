"""Prompts in, text out: recipes and their prompts, chat rendering, and judging the outputs.

  recipes.py       Recipe and Step, rendering their prompt templates into chat messages
  recipe_files.py  prompt-set files (prompt_sets/paper.yaml, synthllm.yaml, `--prompts FILE`), read and checked
  chat.py          rendering messages with the generator's chat template
  filters.py       post-filters (preambles, refusals, too short/long, truncated, repetitive)
  repetition.py    the Gopher repetition rules
  fidelity.py      fidelity per corpus: pass rate, output tokens, source content words kept
"""
