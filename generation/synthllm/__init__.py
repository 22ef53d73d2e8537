"""SynthLLM (Qin et al. 2025; docs/synthllm.md) on the run loop: concepts, their graph, levels 2 and 3.

  concepts.py          parsing an extraction output into a normalised concept list
  concept_keys.py      canonical keys of concepts and the text's key phrases (YAKE)
  graph_build.py       `generation concept-graph`: the streaming build to Parquet nodes/edges
  pair_counts.py       the graph's pair counts: a reduce partitioned by key range, spilled to disk
  graph_reader.py      a built graph as arrays (adjacency, documents, texts by offset)
  concept_sampling.py  level-3 weighted random walks, level-2 subsets: seeded by (graph, seed, index)
  concept_sources.py   those samples as the sources of `generation run` (levels 2 and 3)
  diversity.py         distinct concepts, pairs, spanning share, distinct-n; comparing levels

The recipes are data (generation/text/prompt_sets/synthllm.yaml); the run loop (generation/run/)
uses this package, never the other way round.
"""
