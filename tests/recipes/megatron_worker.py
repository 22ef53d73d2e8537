"""Test-only launcher for the megatron-core trainer: one torchrun worker.

    python -m torch.distributed.run --nproc-per-node 2 tests/recipes/megatron_worker.py \
        --run-dir RUN --tp 2 --pp 1 --out OUT_DIR [--evaluate] [--stop-after-minutes M]

Every rank writes OUT_DIR/rank<R>.json with what `train` (and `evaluate`) returned, so a test can
check that all ranks agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--stop-after-minutes", type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("SYNTHSCALE_TORCH_THREADS", "1")))

    from recipes.megatron.parallel import init_distributed
    from recipes.megatron.trainer import evaluate, train
    from recipes.run_spec import RunSpec

    init_distributed(args.tp, args.pp)
    run_dir = Path(args.run_dir)
    spec = RunSpec.load(run_dir)
    result = train(run_dir, spec, stop_after_minutes=args.stop_after_minutes)
    if args.evaluate and result["finished"]:
        result["eval"] = evaluate(run_dir, spec, sorted(spec.eval_domains))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rank = torch.distributed.get_rank()
    (out / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        main()
    except BaseException:
        # what went wrong, where the test can read it (torchrun's own report keeps only an exit code)
        out = Path(sys.argv[sys.argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{os.environ.get('RANK', '0')}.error").write_text(traceback.format_exc(), encoding="utf-8")
        raise
