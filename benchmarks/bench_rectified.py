"""Benchmark of the rectified law: its fit plus 1,000 bootstrap resamples on 90 curves of 14 points.

The curves are simulated from L(D) = B / (D_l + D^beta) + E with known parameters (a third with
D_l = 0, the data law), 14 budgets from 100M to 1T tokens, 0.3% log-normal noise: the shape of
curves published with other papers (SynthLLM's, a loss per budget at each size). Each curve is
fitted from the full starting grid (750 L-BFGS-B starts), then bootstrapped (1,000 resamples,
warm-started), then its plateau D_p found for the fit and every resample, on `--workers`
processes (the analysis's own option; 0: all cores). Prints the wall time, the per-curve median
and spread, the cores used, how many fits are identified and how often the planted parameters lie
within their intervals. Figures only, no targets: a script, never a timed test.

Run: .venv/bin/python benchmarks/bench_rectified.py [--curves 90] [--resamples 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.analysis.simulate: the simulated curves

from analysis.core.laws import LAWS
from analysis.core.settings import COARSE_GRID, FitSettings
from analysis.fitting.bootstrap import bootstrap_fits
from analysis.fitting.fit import fit_unit
from analysis.fitting.units import FitUnit
from analysis.fitting.workers import worker_pool
from analysis.results.model import Fitted
from analysis.results.plateau import plateau_entry
from synthscale.cli import resolve_workers
from tests.analysis.simulate import RectifiedCurve

BUDGETS = np.geomspace(1e8, 1e12, 14)


def planted_curves(n: int, seed: int = 0) -> list[RectifiedCurve]:
    rng = np.random.default_rng(seed)
    curves = []
    for i in range(n):
        beta = rng.uniform(0.25, 0.5)
        D_l = 0.0 if i % 3 == 0 else float(np.exp(rng.uniform(0.0, 1.0)) * 1e8**beta * rng.uniform(0.1, 3.0))
        B = float(rng.uniform(0.5, 2.0) * (D_l + 1e8**beta))  # reducible loss 0.5 to 2 nats at 100M tokens
        curves.append(RectifiedCurve(B=B, D_l=D_l, E=float(rng.uniform(1.5, 2.5)), beta=float(beta)))
    return curves


def unit_of(curve: RectifiedCurve, i: int, noise: float, rng) -> FitUnit:
    loss = curve.loss(BUDGETS) * np.exp(rng.normal(0.0, noise, BUDGETS.size))
    return FitUnit(LAWS["rectified"], (f"curve{i:03d}",), ("N", 1e9), np.full(BUDGETS.size, 1e9), BUDGETS.copy(),
                   loss, np.array([f"c{i}-{j}" for j in range(BUDGETS.size)]), np.zeros(BUDGETS.size, np.intp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=int, default=90)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="Worker processes (0: all cores).")
    parser.add_argument("--grid", choices=["full", "coarse"], default="full")
    parser.add_argument("--noise", type=float, default=0.003)
    args = parser.parse_args()

    settings = FitSettings(grid=COARSE_GRID if args.grid == "coarse" else None)
    rng = np.random.default_rng(1)
    curves = planted_curves(args.curves)
    units = [unit_of(c, i, args.noise, rng) for i, c in enumerate(curves)]
    workers = resolve_workers(args.workers)
    print(f"{args.curves} curves x {BUDGETS.size} points; rectified law, {args.grid} starting grid; "
          f"{args.resamples} bootstrap resamples each; {workers} worker process(es) on {resolve_workers(0)} "
          f"available core(s); load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    per_curve, fit_s, boot_s = [], [], []
    identified = covered = checked = failed = plateaus = 0
    start = time.perf_counter()
    with worker_pool(args.workers) as pool:
        if pool is not None:  # start every worker (imports included) before timing
            list(pool.map(time.sleep, [0.5] * workers))
        pool_start = time.perf_counter() - start
        wall_start = time.perf_counter()
        cpu_start = time.process_time()
        for curve, unit in zip(curves, units):
            tick = time.perf_counter()
            fit = fit_unit(unit, settings, pool=pool)
            fit_s.append(time.perf_counter() - tick)
            tock = time.perf_counter()
            samples = bootstrap_fits([fit], args.resamples, seed=0, settings=settings, pool=pool).get(0)
            fitted = Fitted(fit, samples)
            fitted.identify(0.95)
            entry = plateau_entry(fitted, "absolute", 0.01, 10.0, 0.95)
            boot_s.append(time.perf_counter() - tock)
            per_curve.append(time.perf_counter() - tick)
            failed += samples.n_failed if samples is not None else args.resamples
            plateaus += entry["identified"]
            if len(per_curve) % 10 == 0:
                print(f"  {len(per_curve)} curves done, {time.perf_counter() - wall_start:.0f} s", flush=True)
            if fitted.identified:
                identified += 1
                intervals = samples.param_intervals(unit.mixtures[0], 0.95)
                for name in ("B", "D_l", "E", "beta"):
                    if name == "D_l" and curve.D_l == 0.0:
                        continue
                    checked += 1
                    covered += intervals[name][0] <= getattr(curve, name) <= intervals[name][1]
        wall = time.perf_counter() - wall_start
        parent_cpu = time.process_time() - cpu_start
    print(f"pool of {workers} started in {pool_start:.2f} s (not in the figures below)")
    print(f"wall time: {wall:.1f} s for {args.curves} curves ({parent_cpu:.1f} s CPU in the parent process)")
    print(f"per curve: median {statistics.median(per_curve):.2f} s (grid fit {statistics.median(fit_s):.2f} s, "
          f"bootstrap + plateau {statistics.median(boot_s):.2f} s); min {min(per_curve):.2f} s, max {max(per_curve):.2f} s")
    print(f"cores used: {workers} worker process(es) of {resolve_workers(0)} available; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"identified fits: {identified} of {args.curves}; planted parameters within their 95% intervals: "
          f"{covered} of {checked}; failed resamples: {failed} of {args.curves * args.resamples}; "
          f"identified plateaus (0.01 nats): {plateaus}")


if __name__ == "__main__":
    main()
