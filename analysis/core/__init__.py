"""The bottom layer: the laws and their objectives, statistics, identification rules, settings and
defaults. Imports nothing else of the analysis."""
