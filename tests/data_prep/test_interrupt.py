"""An interrupted tokenize leaves nothing that looks complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data_prep.tokenize import output_paths
from tests.data_prep.conftest import make_docs, write_jsonl


def complete_outputs(prefix: Path) -> list[str]:
    return sorted(p.name for p in output_paths(prefix).values() if p.exists())


def start_tokenize(inputs, prefix, spec) -> subprocess.Popen:
    code = (
        "import sys; from data_prep.cli import main; "
        "sys.exit(main(sys.argv[1:], standalone_mode=True))"
    )
    args = [sys.executable, "-c", code, "tokenize", *map(str, inputs), "--output", str(prefix),
            "--tokenizer", spec, "--no-progress"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_tmp_bin(prefix: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the run is writing (its temporary .bin has grown), so the kill lands mid-run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        temps = list(prefix.parent.glob(f".tmp-{prefix.name}.bin.*"))
        if temps and temps[0].stat().st_size > 100_000:
            return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    raise AssertionError("tokenize never started writing")


def test_sigkill_mid_run_leaves_no_complete_looking_output(tmp_path, hf_tokenizer_path):
    big = write_jsonl(tmp_path / "big.jsonl", make_docs(60_000, words=120))
    prefix = tmp_path / "out" / "ds"
    prefix.parent.mkdir()
    proc = start_tokenize([big], prefix, f"hf:{hf_tokenizer_path}")
    wait_for_tmp_bin(prefix, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert complete_outputs(prefix) == []


def test_killed_rerun_does_not_leave_old_manifest_beside_new_data(tmp_path, hf_tokenizer_path):
    small = write_jsonl(tmp_path / "small.jsonl", make_docs(50))
    big = write_jsonl(tmp_path / "big.jsonl", make_docs(60_000, words=120))
    prefix = tmp_path / "out" / "ds"
    spec = f"hf:{hf_tokenizer_path}"
    first = start_tokenize([small], prefix, spec)
    assert first.wait() == 0, first.stderr.read().decode()
    assert "ds.manifest.json" in complete_outputs(prefix)
    rerun = start_tokenize([big], prefix, spec)
    wait_for_tmp_bin(prefix, rerun)
    os.kill(rerun.pid, signal.SIGKILL)
    rerun.wait()
    # The old .bin/.idx may remain, but without a manifest nothing treats them as complete.
    assert "ds.manifest.json" not in complete_outputs(prefix)


def test_a_failing_run_cleans_its_temporaries(tmp_path, hf_tokenizer_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_docs(2000), [b"{broken"])
    prefix = tmp_path / "out" / "ds"
    proc = start_tokenize([path], prefix, f"hf:{hf_tokenizer_path}")
    assert proc.wait() == 1
    assert f"{path}:2001: malformed json" in proc.stderr.read().decode()
    assert list(prefix.parent.iterdir()) == []
