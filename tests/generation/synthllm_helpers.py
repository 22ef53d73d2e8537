"""Helpers for the SynthLLM tests: a stand-in engine that answers the concept-extraction prompt
with a scripted concept list, and the pool those tests write."""

from __future__ import annotations

import json
import re

from genhelpers import EchoBackend

from generation.run.config import RunConfig
from study.tiny_llama import sample_text

# The pool: document id -> the concepts its extraction answer lists (as a model might write them).
POOL = {
    "d0": ["River", "city", "Trade"],
    "d1": ["river", " Mountain ", "climate"],
    "d2": ["trade", "market", "City", "city"],
    "d3": ["climate", "ocean", "river"],
    "d4": ["market", "trade", "population"],
    "d5": ["ocean", "island", "climate"],
    "d6": ["population", "city", "history"],
    "d7": ["history", "empire", "war"],
}
_TOPICS = re.compile(r"Topics: ([^\n]*)")


def pool_documents(pool: dict = POOL, words: int = 50) -> list[dict]:
    return [{"id": doc_id, "text": f"Topics: {'|'.join(concepts)}\n\n" + sample_text(words, seed=i)}
            for i, (doc_id, concepts) in enumerate(pool.items())]


class ConceptBackend(EchoBackend):
    """Extraction requests get the concepts the document's `Topics:` line names, as a JSON array
    (or `raw[doc]` verbatim, for malformed answers); other requests get EchoBackend's text."""

    def __init__(self, tokenizer, raw: dict | None = None, finish_reason: str = "stop", **kw):
        super().__init__(tokenizer, **kw)
        self.raw = raw or {}
        self.concept_finish = finish_reason

    def poll(self):
        from generation.engine import Result

        concept_requests = [r for r in self._queue if json.loads(r.key)[3] == "concepts"]
        self._queue = [r for r in self._queue if json.loads(r.key)[3] != "concepts"]
        out = []
        for request in concept_requests:
            source = json.loads(request.key)[0]
            prompt = request.messages[-1]["content"]
            if source in self.raw:
                text = self.raw[source]
            else:
                match = _TOPICS.search(prompt)
                text = json.dumps(match.group(1).split("|") if match else [])
            out.append(Result(request, text=text, output_tokens=len(text.split()),
                              prompt_tokens=len(request.prompt_token_ids), finish_reason=self.concept_finish))
        if self._queue:
            out.extend(super().poll())
        else:
            self.polls += 1
        return out


def synth_config(tmp_path, recipe: str, out: str, **kw) -> RunConfig:
    base = dict(recipe=recipe, inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / out), model="echo",
                filters={"min_tokens": 1}, commit_every=3, commit_seconds=3600, quiet=True, max_new_tokens={"*": 64})
    if recipe in ("synthllm-l2", "synthllm-l3"):
        base["inputs"] = []
    base.update(kw)
    return RunConfig(**base)
