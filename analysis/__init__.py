"""analysis: scaling-law fits, findings, unigram diagnostics and the report.

Reads results only through files: the results table (docs/formats.md section 5) and,
for unigram diagnostics, Megatron .bin/.idx datasets. Where things are:

- table.py       reading and cleaning the results table (bad rows excluded and listed)
- laws.py        the three laws and the Huber objective with its analytic gradient
- units.py       what one fit is fitted on, and the "too few points" checks
- fit.py         L-BFGS-B from the starting grid, best kept; shared-exponent starts
- bootstrap.py   resampling runs, percentile intervals
- validation.py  holdout validation (RMAE) and extrapolation
- findings.py    speed-up, crossings, best ratio
- pipeline.py    one analysis start to end (`run_analysis`)
- unigram.py     token statistics streamed from .bin/.idx
- plots.py, report.py   figures and the HTML/Markdown/JSON report
- cli.py         the `analysis` command (fit, report, unigram)
"""
