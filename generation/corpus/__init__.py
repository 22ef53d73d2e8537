"""The corpora a run reads: source documents, and generation outputs found by their manifests.

  documents.py  reading source JSONL: each `--shard i/n` reads only its byte range
  outputs.py    a generation output directory's manifests: their names, their kind, finding them
"""
