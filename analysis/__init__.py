"""analysis: scaling-law fits, findings, unigram diagnostics and the report.

Reads results only through files: the results table (docs/formats.md section 5) and, for unigram
diagnostics, Megatron .bin/.idx datasets and their manifests' tokenizer (through data_prep's reader
and loader: the only part that needs the `synthscale[data_prep]` extra; fitting and the report need
numpy, scipy, pandas and matplotlib).

Layers, each importing only those below it (checked by import-linter, `.importlinter`):

- cli/       the `analysis` command: fit, report (its config file), unigram
- report/    the report's sections and figures, the five-line summary, HTML/Markdown/fits.json, reuse
- multi.py   every condition, the mean loss and each domain (`run_all`, `AnalysisSet`)
- pipeline.py  one analysis of one condition and one loss column, start to end (`run_analysis`)
- results/   the result model (`Fitted`, `Analysis`); speed-up, crossings, best ratio, E,
             extrapolation, plateau, D_l, the rectified-vs-data-law comparison, the identification table
- fitting/   what one fit is fitted on (units), L-BFGS-B from the starting grid, bootstrap, holdout, workers
- data/      reading the table, labels, conditions and ratio axes, the model-free comparison with the
             seed noise, corpora manifests, unigram diagnostics
- core/      the laws and their objectives (the rectified law too), percentile intervals, the
             identification rules, settings (`AnalysisConfig`, `FitSettings`, grids), defaults
"""
