"""The generator model as a file: its identity, and GGUF conversion.

  identity.py      the generator's name and weights hash ("<name>@<sha256[:12]>")
  gguf_convert.py  `generation convert-gguf`: a Llama GGUF file -> a Hugging Face folder
  gguf_rope.py     the GGUF's RoPE scaling the transformers loader leaves out
"""
