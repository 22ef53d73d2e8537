"""The whole analysis of a results table: every condition, the mean loss and each domain.

`run_all` splits the table by condition (grouping.split_conditions), runs `run_analysis` on each
for the fitted column (`loss` by default), then again for each `loss.<domain>` column with the
cheaper `domain_config` (fewer resamples, coarse grid, no holdout), all on one worker pool.
`AnalysisSet.to_json()` is fits.json's body; findings lists are flat, each entry naming its
condition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from analysis.core.identify import RECTIFIED_RULES, RULES
from analysis.core.settings import AnalysisConfig
from analysis.data.grouping import split_conditions
from analysis.data.labels import slug
from analysis.data.table import ResultsTable, TableError
from analysis.fitting.holdout import holdout_summary
from analysis.fitting.units import UnfittableError
from analysis.fitting.workers import worker_pool
from analysis.pipeline import run_analysis
from analysis.results.model import Analysis
from analysis.results.plateau import plateau_rules


@dataclass
class AnalysisSet:
    table: ResultsTable  # the whole table, fitted column
    config: AnalysisConfig
    analyses: list[Analysis]  # one per condition (one in all when pooled)
    domains: dict[str, list[Analysis]] = field(default_factory=dict)  # "loss.<domain>" -> per condition
    domain_config: AnalysisConfig | None = None
    pooled: bool = False
    label: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def many_conditions(self) -> bool:
        return len(self.analyses) > 1

    def flat(self, key: str) -> list:
        return [item for a in self.analyses for item in getattr(a, key)]

    def conditions(self) -> list[dict]:
        out = []
        for a in self.analyses:
            runs = a.table.runs
            out.append({
                "condition": a.condition,
                "backend": sorted(set(runs["backend"]) - {""}) or None,
                "recipe_hash": sorted(set(runs["recipe_hash"]) - {""}) or None,
                "eval_identity": sorted(set(runs["eval_identity"]) - {""}) or None,
                "runs": int(len(runs)), "mixtures": a.table.mixtures,
                "repeated_configurations": len(a.table.repeated),
            })
        return out

    def to_json(self) -> dict:
        c = self.config.confidence
        laws = list(self.config.laws)
        fits = {law: [f.to_dict(c) for a in self.analyses for f in a.fits.get(law, [])] for law in laws}
        shared = {law: [f.to_dict(c) for a in self.analyses for f in a.shared.get(law, [])]
                  for law in laws if any(law in a.shared for a in self.analyses)}
        holdouts = {}
        for law in ("data", "rectified", "model", "joint"):
            hs = [h for a in self.analyses for h in a.holdouts.get(law, [])]
            if any(law in a.holdouts for a in self.analyses):
                holdouts[law] = {"summary": holdout_summary(hs), "units": [h.to_dict() for h in hs]}
        seeds = {"configurations": [], "effects": []}
        for a in self.analyses:
            for key in seeds:
                seeds[key] += [{"condition": a.condition, **row} for row in a.seeds.get(key, [])]
        return {
            "label": self.label,
            "table": self.table.summary(),
            "settings": self.config.to_dict(),
            "domain_settings": self.domain_config.to_dict() if self.domain_config is not None else None,
            "identification_rules": RULES,
            "rectified_rules": {"identification": RECTIFIED_RULES,
                                "plateau": plateau_rules(self.config)} if "rectified" in laws else None,
            "conditions": self.conditions(),
            "pooled_conditions": self.pooled,
            "groups": self.flat("groups"),
            "seed_spread": seeds,
            "fits": fits,
            "shared_exponent_fits": shared,
            "not_fitted": self.flat("not_fitted"),
            "identification": self.flat("identification"),
            "model_free": [{"condition": a.condition, **a.comparison} for a in self.analyses],
            "holdout": holdouts,
            "baseline": [{"condition": a.condition, "mixture": a.baseline, "why": a.baseline_note} for a in self.analyses],
            "extrapolation": self.flat("extrapolations"),
            "speedup": self.flat("speedups"),
            "best_ratio": self.flat("best_ratios"),
            "irreducible_loss": self.flat("irreducible"),
            "law_comparison": self.flat("law_comparison"),
            "plateau": self.flat("plateaus"),
            "plateau_trend": self.flat("plateau_trends"),
            "domains": {target: [a.to_json() for a in analyses] for target, analyses in self.domains.items()},
            "notes": self.all_notes(),
            "seconds": self.seconds,
        }

    def all_notes(self) -> list[str]:
        notes = list(self.table.notes) + list(self.notes)
        for a in self.analyses:
            prefix = f"[{a.condition}] " if self.many_conditions and a.condition else ""
            notes += [prefix + n for n in a.notes]
        return list(dict.fromkeys(notes))


def domain_settings(config: AnalysisConfig, target: str, bootstrap: int | None, fit=None) -> AnalysisConfig:
    """The cheaper settings of a per-domain analysis: no holdout, no shared exponents, no
    extrapolation, unfittable fits listed; `bootstrap` and `fit` (grid) as given."""
    return replace(config, target=target, bootstrap=config.bootstrap if bootstrap is None else bootstrap,
                   fit=config.fit if fit is None else fit, holdout=False, holdout_joint=False,
                   shared_exponents=False, extrapolate_N=(), extrapolate_D=(), skip_unfittable=True)


def run_all(
    table: ResultsTable,
    config: AnalysisConfig,
    domain_tables: dict[str, ResultsTable] | None = None,
    domain_config: AnalysisConfig | None = None,
    pool_conditions: bool = False,
    label: str | None = None,
) -> AnalysisSet:
    """Analyse every condition of `table`, then each domain table with `domain_config`.

    Raises UnfittableError (main target only) as `run_analysis` does; a domain whose fits lack
    points lists them instead.
    """
    parts, notes = split_conditions(table, pool_conditions)
    out = AnalysisSet(table, config, [], {}, domain_config, pool_conditions, label, notes)
    with worker_pool(config.workers) as pool:
        tick = time.perf_counter()
        problems = []
        for part in parts:
            try:
                analysis = run_analysis(part, config, pool)
            except UnfittableError as exc:
                problems += [f"[{part.condition}] {p}" if len(parts) > 1 and part.condition else p
                             for p in exc.problems]
                continue
            analysis.prefix = slug(part.condition) + "_" if len(parts) > 1 and part.condition else ""
            out.analyses.append(analysis)
        if problems:
            raise UnfittableError(problems)
        out.seconds[config.target] = time.perf_counter() - tick
        for target, domain_table in (domain_tables or {}).items():
            tick = time.perf_counter()
            cfg = domain_config or domain_settings(config, target, None)
            cfg = replace(cfg, target=target)
            domain_parts, _ = split_conditions(domain_table, pool_conditions)
            try:
                out.domains[target] = [run_analysis(p, cfg, pool) for p in domain_parts]
            except TableError as exc:  # e.g. the named baseline has no usable run in this domain
                out.notes.append(f"{target} not analysed: {exc}")
            out.seconds[target] = time.perf_counter() - tick
    return out
