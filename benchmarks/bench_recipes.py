"""CPU trainer throughput against a bare transformers training loop on the same model and batches.

Both train the same LlamaForCausalLM (same shape, seed, AdamW, warmup + cosine schedule,
clipping) on the same global batches; the bare loop gets the batches already in memory, the
trainer reads them through megatron-core's blended dataset and also keeps the loss curve,
the progress bookkeeping and writes its final checkpoint. Repeats alternate the two side by
side; the figures are medians. Target: trainer overhead within 10%.

Text: /work/shared/data (real English) when present, else generated text.

    .venv/bin/python benchmarks/bench_recipes.py [--shape tiny-s] [--steps 20] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from click.testing import CliRunner

warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
warnings.filterwarnings("ignore", message=".*pad token id in the tokenizer collides.*")

SHARED = Path("/work/shared/data")


def corpora(root: Path) -> dict[str, Path]:
    """natural + synthetic + eval JSONL files (real text when available)."""
    if (SHARED / "wikitext2_valid.jsonl").is_file():
        return {
            "natural": SHARED / "wikitext2_valid.jsonl",
            "synth": SHARED / "commoncrawl_head_sample.jsonl",
            "eval": SHARED / "c4_sample.jsonl",
        }
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    out = {}
    for name, docs in (("natural", 3000), ("synth", 1500), ("eval", 300)):
        path = root / f"{name}.jsonl"
        with open(path, "w") as handle:
            for i in range(docs):
                handle.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(80))}) + "\n")
        out[name] = path
    return out


def tokenize_corpora(root: Path) -> None:
    """A 4,096-id BPE trained on the corpora, and each tokenized to root/<name> by `data_prep tokenize`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from data_prep.cli import main as data_prep

    files = corpora(root)
    texts = [json.loads(line)["text"] for path in files.values() for line in open(path)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=4096, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(root / "tokenizer.json"))
    for name, path in files.items():
        result = CliRunner().invoke(data_prep, ["tokenize", str(path), "--output", str(root / name),
                                                "--tokenizer", f"hf:{root / 'tokenizer.json'}", "--no-progress"])
        assert result.exit_code == 0, result.output


def prepare(root: Path, shape: str, steps: int) -> Path:
    """Tokenize, blend and plan one CPU run (via the real data_prep and recipes commands)."""
    from data_prep.cli import main as data_prep
    from recipes.cli import main as recipes

    tokenize_corpora(root)
    runner = CliRunner()
    tokens = steps * 16 * 128
    result = runner.invoke(data_prep, ["blend", "--data", f"natural={root / 'natural'}", "--data",
                                       f"synth={root / 'synth'}", "--synthetic", "synth", "--weights",
                                       "natural=0.67,synth=0.33", "--tokens", str(tokens), "--seq-length", "128",
                                       "--output", str(root / "blend.yaml")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(recipes, ["sweep", "--sizes", shape, "--tokens", str(tokens), "--blends",
                                     str(root / "blend.yaml"), "--eval", f"eval={root / 'eval'}",
                                     "--checkpoint-interval", "1000000", "--output", str(root / "runs"), "--dry-run"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return run_dir


def time_trainer(template: Path, scratch: Path) -> tuple[float, int]:
    """Seconds for CpuTrainer.train() on a fresh copy of the run (data reads and final checkpoint included)."""
    from recipes.cpu_trainer import CpuTrainer

    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(template, scratch)
    trainer = CpuTrainer(scratch)
    started = time.perf_counter()
    trainer.train(progress=False)
    return time.perf_counter() - started, trainer.spec.plan.tokens


def bare_batches(template: Path) -> list[dict]:
    from recipes.cpu_trainer import CpuTrainer

    trainer = CpuTrainer(template)
    trainer.build_dataset()
    return [trainer.batch(step) for step in range(trainer.spec.plan.train_iters)]


def time_bare_loop(template: Path, batches: list[dict]) -> float:
    """The same model, optimizer and schedule in a plain loop over in-memory batches."""
    from recipes.cpu_model import adamw_param_groups, build_model
    from recipes.recipe import learning_rate
    from recipes.run_spec import RunSpec

    spec = RunSpec.load(template)
    recipe, plan = spec.recipe, spec.plan
    vocab = int(spec.load_blend().tokenizer["vocab_size"])
    model = build_model(spec.shape, vocab, recipe.seq_length, recipe.seed)
    model.train()
    optimizer = torch.optim.AdamW(adamw_param_groups(model, recipe.weight_decay), lr=recipe.peak_lr,
                                  betas=(recipe.adam_beta1, recipe.adam_beta2), eps=recipe.adam_eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate(s, plan, recipe) / recipe.peak_lr)
    started = time.perf_counter()
    for batch in batches:
        logits = model(input_ids=batch["tokens"].long()).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].long().flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="tiny-s")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_recipes_") as tmp:
        root = Path(tmp)
        template = prepare(root, args.shape, args.steps)
        batches = bare_batches(template)
        time_trainer(template, root / "warmup")  # warm caches (dataset index, allocator) for both
        time_bare_loop(template, batches)
        trainer_s, bare_s, tokens = [], [], 0
        for _ in range(args.repeats):
            seconds, tokens = time_trainer(template, root / "scratch")
            trainer_s.append(seconds)
            bare_s.append(time_bare_loop(template, batches))

    trainer_tps = tokens / statistics.median(trainer_s)
    bare_tps = tokens / statistics.median(bare_s)
    source = "real text (/work/shared/data)" if (SHARED / "wikitext2_valid.jsonl").is_file() else "generated text"
    print(f"recipes CPU trainer vs bare transformers loop: shape {args.shape}, {args.steps} steps x 16 x 128 tokens, "
          f"{args.repeats} repeats, torch threads {args.threads}, {source}")
    print(f"  trainer  median {statistics.median(trainer_s):.3f} s  {trainer_tps:,.0f} tokens/s  "
          f"(runs: {', '.join(f'{s:.3f}' for s in trainer_s)})")
    print(f"  bare     median {statistics.median(bare_s):.3f} s  {bare_tps:,.0f} tokens/s  "
          f"(runs: {', '.join(f'{s:.3f}' for s in bare_s)})")
    ratios = [b / t for t, b in zip(trainer_s, bare_s)]
    print(f"  trainer / bare throughput: {trainer_tps / bare_tps:.3f} (median of paired ratios "
          f"{statistics.median(ratios):.3f}); overhead {100 * (1 - trainer_tps / bare_tps):.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
