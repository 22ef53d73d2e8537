"""The work of a run: which requests each source yields, with their keys, seeds and ids.

A source longer than `--chunk-tokens` is split into chunks, and each chunk goes through the
recipe's steps. One `WorkItem` is one request: (source id, chunk, recipe, step[, k]), where k
numbers the repeats of a repeated step (the textbook's 10 chapters). Its key (`work_key`) is
what the commit log records as done, so a resumed run skips it; its sampling seed
(`request_seed`) depends on nothing else, so its output reproduces in any batch, shard or
resumption. The output of a step fills the `{STEP}` placeholder of the next step's items: one
outline yields 10 chapter items. Output documents are named by `document_id`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

from generation.corpus.documents import SourceDoc
from generation.run.chunking import split_with_counts
from generation.text.recipes import Recipe

INPUT_STEP = "input"  # the step name recorded for a source that could not be read


def request_seed(run_seed: int, source_id: str, chunk: int, recipe: str, step: str, k: int | None) -> int:
    """The per-request sampling seed: a function of (source id, chunk, recipe, step[, k], run
    seed) only, so the same request gets the same tokens in any batch, shard or resumption."""
    material = json.dumps([int(run_seed), source_id, chunk, recipe, step, k], ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest()[:8], "big") & 0x7FFFFFFF


def work_key(source_id: str, chunk: int | None, recipe: str, step: str, k: int | None = None) -> str:
    return json.dumps([source_id, chunk, recipe, step, k], ensure_ascii=False, separators=(",", ":"))


def document_id(recipe: str, source_id: str, chunk: int, k: int | None) -> str:
    base = f"{recipe}:{source_id}:{chunk}"
    return base if k is None else f"{base}:{k}"


@dataclass
class WorkItem:
    """One request to make: a step of the recipe on one chunk of one source."""

    key: str  # work_key(...)
    source_id: str
    gindex: int  # the source's index in the whole input (picks the textbook audience)
    chunk: int
    n_chunks: int
    step_index: int
    k: int | None  # repeat number of a repeated step, else None
    values: dict  # the prompt's placeholders: document, audience, k, earlier steps' outputs
    source_tokens: int  # tokens of the chunk (sets the step's target length)
    audience: str | None
    extra: dict = field(default_factory=dict)  # copied into the output record (concept-graph sources)


class WorkPlanner:
    """Turns sources into the work items still to do, skipping what an earlier run finished.

    `status` (key -> "ok" / "filtered" / "failed") is the commit log's, updated as the run goes;
    keys in `retry` (`--retry-failed`) count as not done; `intermediate` (key -> record) holds
    the outputs of finished intermediate steps, from which their next steps are planned without
    redoing them.
    """

    def __init__(self, recipe: Recipe, status: dict, retry: set, intermediate: dict[str, dict],
                 count_tokens: Callable[[str], int], chunk_tokens: int):
        self.recipe = recipe
        self.status = status
        self.retry = retry
        self.intermediate = intermediate
        self.count_tokens = count_tokens
        self.chunk_tokens = chunk_tokens

    def is_done(self, key: str) -> bool:
        return key in self.status and key not in self.retry

    def items_for_step(self, step_index: int, base: dict, values: dict) -> list[WorkItem]:
        """The items of one step for one chunk (`repeat` of them for a repeated step)."""
        recipe = self.recipe
        step = recipe.steps[step_index]
        ks = [None] if step.repeat is None else list(range(1, step.repeat + 1))
        out = []
        for k in ks:
            key = work_key(base["source_id"], base["chunk"], recipe.name, step.name, k)
            v = dict(values)
            if k is not None:
                v["k"] = k
            out.append(WorkItem(key=key, step_index=step_index, k=k, values=v, **base))
        return out

    def next_items(self, item: WorkItem, text: str) -> list[WorkItem]:
        """The next step's items, given `text`, the output of `item`'s step."""
        step = self.recipe.steps[item.step_index]
        base = dict(source_id=item.source_id, gindex=item.gindex, chunk=item.chunk, n_chunks=item.n_chunks,
                    source_tokens=item.source_tokens, audience=item.audience, extra=item.extra)
        values = {k: v for k, v in item.values.items() if k != "k"}
        values[step.name] = text
        return self.items_for_step(item.step_index + 1, base, values)

    def expand(self, item_list: list[WorkItem]) -> list[WorkItem]:
        """Drop done items; for a done intermediate step, expand into the next step's items."""
        recipe = self.recipe
        todo: list[WorkItem] = []
        for item in item_list:
            if not self.is_done(item.key):
                todo.append(item)
                continue
            if item.step_index < len(recipe.steps) - 1 and self.status.get(item.key) == "ok":
                rec = self.intermediate.get(item.key)
                if rec is None:  # the record is gone: redo the step
                    todo.append(item)
                    continue
                todo.extend(self.expand(self.next_items(item, rec["text"])))
        return todo

    def source_items(self, doc: SourceDoc) -> tuple[int, list[WorkItem]]:
        """Split a (readable) source into chunks; returns the number of chunks and the items
        still to do for them."""
        recipe = self.recipe
        if doc.values is not None:  # a sample of a concept graph: one unit, its prompt values given
            base = dict(source_id=doc.source_id, gindex=doc.gindex, chunk=0, n_chunks=1,
                        source_tokens=self.count_tokens(doc.values["document"]), audience=None,
                        extra=dict(doc.extra or {}))
            return 1, self.expand(self.items_for_step(0, base, dict(doc.values)))
        chunks = split_with_counts(doc.text, self.count_tokens, self.chunk_tokens)
        audience = recipe.audience_for(doc.gindex)
        todo: list[WorkItem] = []
        for index, (chunk_text, chunk_tokens) in enumerate(chunks):
            base = dict(source_id=doc.source_id, gindex=doc.gindex, chunk=index, n_chunks=len(chunks),
                        source_tokens=chunk_tokens, audience=audience)
            values = {"document": chunk_text}
            if audience is not None:
                values["audience"] = audience
            todo.extend(self.expand(self.items_for_step(0, base, values)))
        return len(chunks), todo
