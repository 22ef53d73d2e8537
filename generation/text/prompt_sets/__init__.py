"""Prompt sets shipped with synthscale (YAML data files)."""
