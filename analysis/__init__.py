"""analysis: scaling-law fits, findings, unigram diagnostics and the report.

Reads results only through files: the results table (docs/formats.md section 5) and,
for unigram diagnostics, Megatron .bin/.idx datasets (through data_prep's reader: the only part
that needs the `synthscale[data_prep]` extra; fitting and the report need numpy, scipy, pandas
and matplotlib). Where things are:

- defaults.py    default settings, importable without numpy (for a fast --help)
- table.py       reading and cleaning the results table (bad rows excluded and listed)
- labels.py      family, generator and condition of each run, from the table's fields only
- grouping.py    conditions, (family, generator) groups, seed repeats and their spread
- laws.py        the laws and the Huber objective with its analytic gradient
- fit_inputs.py  what one fit is fitted on (`FitUnit`), and the "too few points" checks
- fit.py         L-BFGS-B from the starting grid, best kept; shared-exponent starts
- identify.py    converged vs identified: bounds, E driven to zero, intervals over a decade
- bootstrap.py   resampling runs, percentile intervals
- validation.py  holdout validation (RMAE) and extrapolation
- findings.py    speed-up, crossings, best ratio (the formulas)
- derive.py      the findings of one analysis, from identified fits only
- rectified.py   the rectified law B / (D_l + D^beta) + E: its objective, D_l = 0, the comparison with the data law
- plateau.py     the plateau budget D_p per (mixture, N), its interval, D_p against N
- pipeline.py    one analysis (one condition, one loss column) start to end (`run_analysis`)
- multi.py       every condition, the mean loss and each domain (`run_all`)
- summary.py     the five-line summary and the per-domain findings
- unigram.py     token statistics streamed from .bin/.idx (data_prep.indexed, imported when counting)
- plots.py, sections.py, rectified_report.py, textfmt.py, report.py   figures and the HTML/Markdown/JSON report
- cli.py         the `analysis` command (fit, unigram); cli_report.py `analysis report` and its
                 config file; cli_options.py what they share (heavy imports inside the commands)
"""
