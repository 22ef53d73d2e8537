"""data_prep: documents -> Megatron indexed datasets (.bin/.idx + manifest) -> blends.

Depends on no other stage; uses the shared `synthscale` core only.
"""
