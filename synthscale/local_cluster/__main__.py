"""`python -m synthscale.local_cluster up|down|status` (what `make slurm-up` / `make slurm-down` run)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from synthscale.errors import SynthscaleError
import synthscale.local_cluster as local_cluster
from synthscale.local_cluster import down, status, up
from synthscale.local_cluster.config import ensure_packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synthscale.local_cluster", description=local_cluster.__doc__.split("\n\n")[0],
                                     epilog="Example: python -m synthscale.local_cluster up && source .slurm/env && sinfo")
    parser.add_argument("action", choices=("up", "down", "status", "install"),
                        help="install: only the Debian packages (as root; CI runs it before the tests)")
    parser.add_argument("--dir", default=None, help="cluster folder [default: $SYNTHSCALE_SLURM_DIR or .slurm/ in the checkout]")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the node (up) [default: the machine's]")
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            started = time.monotonic()
            paths, names = up(args.dir, args.cpus)
            what = f"started {', '.join(names)}" if names else "already running"
            print(f"Slurm cluster in {paths.root}: {what} ({time.monotonic() - started:.1f} s). Use it with:\n"
                  f"  source {paths.env_file}\n  sinfo   # then sbatch, squeue, sacct; recipes sweep --executor slurm")
        elif args.action == "down":
            stopped = down(args.dir)
            print(f"stopped {', '.join(stopped)}" if stopped else "no cluster daemons were running")
        elif args.action == "install":
            ensure_packages()
            print("Slurm, munge, slurmdbd and MariaDB are installed")
        else:
            print(json.dumps(status(args.dir), indent=1))
    except SynthscaleError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
