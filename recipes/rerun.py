"""What a sweep finds in its run folders, decided before it writes anything.

`survey_runs` gives every planned run (recipes.sweep.PlannedRun) its status:

  - `complete`: results.json scores every requested domain under the requested evaluation
    definition (recipes.results.stale_domains): skipped;
  - `rescore`: results.json exists, but a requested domain is missing or was scored under another
    definition (an added --eval, another --eval-max-tokens): those domains are scored again from
    the final checkpoint, with no retraining. The run keeps its own run.json (training, layout)
    with the evaluation merged in;
  - `queued`: its task of a submitted array is still in Slurm's queue, running or requeued
    (recipes.arrays.active_runs, per task): nothing is written or submitted for it;
  - `pending`: everything else: written and launched.

It refuses the whole sweep, with one line per problem and nothing written, when:

  - arrays were submitted into the runs folder and `squeue` cannot say which of their tasks are
    live (missing, failing), unless `force`: submitting again could put a second job on the
    checkpoints of a run still training;
  - a queued or unfinished run (one with checkpoints) is asked for another parallel layout than
    the one frozen in its run.json: its queued task, and its checkpoints, are for that layout;
  - a run to score again has no final checkpoint;
  - a run's evaluation set or Bridge configuration cannot be made (a domain smaller than one
    window, an evaluation batch that does not divide it).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from recipes.results import is_complete, load_result, requested_definition, stale_domains
from recipes.run_spec import RESULTS_FILE, RUN_SPEC_FILE, RunRefused, RunSpec
from synthscale.errors import SynthscaleError
from synthscale.slurm import QueueUnavailable

CHECKPOINTS = "checkpoints"
TRACKER = "checkpoints/latest_checkpointed_iteration.txt"  # Megatron's, for Bridge and megatron-core


def describe_layout(layout: dict | None) -> str:
    if not layout:
        return "no parallel layout (one process)"
    return (f"TP {layout['tensor_parallel']} x PP {layout['pipeline_parallel']} x DP {layout['data_parallel']} "
            f"on {layout['num_nodes']} node(s) x {layout['gpus_per_node']} ranks, "
            f"micro batch {layout['micro_batch_size']}")


def started(run_dir: Path) -> bool:
    """Whether the run has trained: it has a checkpoint folder with something in it."""
    folder = Path(run_dir) / CHECKPOINTS
    return folder.is_dir() and any(folder.iterdir())


def saved_spec(run_dir: Path) -> RunSpec | None:
    return RunSpec.load(run_dir) if (Path(run_dir) / RUN_SPEC_FILE).is_file() else None


def live_tasks(runs_dir: Path, force: bool, echo: Callable[[str], None]) -> dict[str, str]:
    """{run folder: "ARRAY task N"} of runs Slurm still holds; refused when squeue cannot tell."""
    from recipes.arrays import active_runs, submitted_arrays

    try:
        return active_runs(runs_dir)
    except QueueUnavailable as exc:
        count = len(submitted_arrays(runs_dir))
        if not force:
            raise RunRefused(
                f"{exc}: {count} array(s) were submitted into {runs_dir} and which of their tasks are queued or "
                f"running is unknown; nothing was written or submitted (a second job on a run still training would "
                f"write the same checkpoints). Rerun where squeue answers, or pass --force to launch every "
                f"incomplete run again") from None
        echo(f"warning: {exc}; --force: every incomplete run is launched again, also any still in Slurm's queue")
        return {}


def survey_runs(planned: list, runs_dir: Path, force: bool = False, echo: Callable[[str], None] = print) -> None:
    """Set each run's status (and the spec and domains of runs to score again); raise RunRefused
    listing every problem before anything is written."""
    live = live_tasks(Path(runs_dir), force, echo)
    problems: list[str] = []
    for item in planned:
        problems += _survey(item, live.get(str(item.run_dir)))
    for item in planned:
        problems += _check_writable(item)
    if problems:
        raise RunRefused("sweep refused, nothing was written:\n  - " + "\n  - ".join(dict.fromkeys(problems)))


def _survey(item, queued_as: str | None) -> list[str]:
    spec, run_dir = item.spec, item.run_dir
    old = saved_spec(run_dir)
    frozen = old.layout if old else None
    if queued_as is not None:
        item.status, item.queued_as = "queued", queued_as
        if old is not None and frozen != spec.layout:
            return [f"run {spec.run_id} is in Slurm's queue ({queued_as}) with layout {describe_layout(frozen)}; "
                    f"this sweep asks for {describe_layout(spec.layout)}: its queued task would start with the other "
                    f"layout. Let it finish (or scancel it) first, or ask for its layout"]
        return []
    if is_complete(run_dir):
        record = load_result(run_dir / RESULTS_FILE)
        stale = stale_domains(record, spec)
        if not stale:
            item.status = "complete"
            return []
        base = old or spec
        recorded = (record.get("eval_identity") or {}).get("definition") or {}
        kept = {d: p for d, p in base.eval_domains.items() if d in recorded and d not in spec.eval_domains}
        item.spec = replace(base, eval_domains={**kept, **spec.eval_domains}, eval_max_tokens=spec.eval_max_tokens)
        item.status, item.stale = "rescore", tuple(stale)
        return _final_checkpoint_problems(item)
    if old is not None and frozen != spec.layout and started(run_dir):
        return [f"run {spec.run_id} is unfinished (checkpoints in {run_dir / CHECKPOINTS}) with layout "
                f"{describe_layout(frozen)}; this sweep asks for {describe_layout(spec.layout)}. Finish it with its "
                f"layout, or delete {run_dir} to train it again with the new one"]
    item.status = "pending"
    return []


def _final_checkpoint_problems(item) -> list[str]:
    spec, run_dir = item.spec, item.run_dir
    what = f"run {spec.run_id} is complete but must be scored on {', '.join(item.stale)} (added or defined otherwise)"
    tracker = run_dir / TRACKER
    iteration = tracker.read_text(encoding="utf-8").strip() if tracker.is_file() else None
    if iteration != str(spec.plan.train_iters):
        return [f"{what}: {tracker} names iteration {iteration}, not the final {spec.plan.train_iters}; delete "
                f"{run_dir} to retrain it"]
    return []


def _check_writable(item) -> list[str]:
    """Everything the run's folder will hold, made in memory: its evaluation sets, Bridge's YAMLs."""
    if item.status not in ("pending", "rescore"):
        return []
    spec = item.spec
    domains = list(item.stale) if item.status == "rescore" else list(spec.eval_domains)
    try:
        requested_definition(spec, domains)
        if spec.backend == "bridge":
            from recipes.bridge_config import evaluation_config, training_config

            if item.status == "pending":
                training_config(spec, item.blend, item.run_dir)
            for domain in domains:
                evaluation_config(spec, item.blend, item.run_dir, domain)
    except SynthscaleError as exc:
        return [f"run {spec.run_id}: {exc}"]
    return []
