"""The analysis's default settings, in a module that imports nothing heavy.

The command line shows these in `--help` without importing numpy, scipy or pandas (that keeps
`analysis --help` fast); the modules that use them import them from here.
"""

from __future__ import annotations

LAW_NAMES = ("data", "rectified", "model", "joint")  # the keys of laws.LAWS, in the order --help lists them
DEFAULT_RESAMPLES = 1000  # bootstrap resamples of runs
DEFAULT_CONFIDENCE = 0.95  # coverage of the percentile intervals
DOMAIN_BOOTSTRAP = 100  # default resamples of the per-domain fits (capped by --bootstrap)
DEFAULT_SMOOTHING = 1.0  # additive smoothing of the training distribution in KL(test || train)
TOL_ABS = 0.01  # plateau D_p: doubling D lowers the predicted loss by less than this (nats)
TOL_REL = 0.05  # ... or by less than this share of the remaining reducible loss L(D) - E
MAX_MULTIPLE = 10.0  # a D_p beyond this multiple of the largest budget is not identified
