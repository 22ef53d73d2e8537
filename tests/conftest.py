"""Fixtures shared by every test folder.

`slurm_cluster` (session): the one-node Slurm cluster of this checkout (synthscale.local_cluster;
`make slurm-up` starts it for users). A cluster already running is reused and left running; else
the session starts one and the last session using it stops it. SLURM_CONF is set in os.environ
for the session, so `sbatch`, NeMo-Run and the stage commands (in-process or subprocesses) use it.
Where Slurm cannot be had (not installed and not root) the tests that use it skip and say why;
with SYNTHSCALE_REQUIRE_SLURM=1 (CI, .ci/run) that is an error instead. See tests/slurm_cluster.py.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def slurm_cluster():
    from tests.slurm_cluster import open_cluster

    with open_cluster(pytest.skip) as cluster:
        yield cluster
