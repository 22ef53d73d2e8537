"""`generation run`: the run loop, sources -> work items -> prompts -> backend -> post-filters ->
sharded JSONL, committed as it goes. (`generation/__init__.py` lists the modules it uses.)

The loop keeps the backend full: while it has room it submits the next item (first items of
later steps, they finish books; then the other planned items; else it reads and plans the next
source), then it polls for results and files each one (a document, an intermediate output that
plans the next step, filtered, or failed), committing every `commit_every` keys or
`commit_seconds`. The commit log of `store.ShardStore` makes a rerun of the same command
continue where a killed run stopped, without losing or duplicating a key. SIGTERM/SIGINT stop
the loop: what finished is committed and the manifest says it is not complete.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter, defaultdict, deque
from typing import Iterator

from synthscale.files import write_json_atomic

from generation.corpus.documents import SourceDoc, iter_documents
from generation.corpus.outputs import manifest_name
from generation.engine import Backend, Request, Result, make_backend
from generation.run.config import RunConfig, RunSettings, check_run_file
from generation.run.manifest import build_manifest, print_summary
from generation.run.store import Replayed, ShardStore
from generation.run.work_plan import INPUT_STEP, WorkItem, WorkPlanner, document_id, request_seed, work_key
from generation.synthllm.concept_sources import iter_graph_sources
from generation.synthllm.concepts import ConceptParseError, extraction_fields
from generation.synthllm.graph_reader import ConceptGraph
from generation.text.chat import ChatRenderer
from generation.text.fidelity import Tally
from generation.text.filters import FilterResult, apply_filters
from generation.text.recipes import Recipe, Step, build_messages, render


class Run:
    """One invocation of one worker (`--shard i/n`): `Run(config, backend).execute()`."""

    def __init__(self, config: RunConfig, backend: Backend | None = None):
        self.config = config
        self.settings = RunSettings.resolve(config)
        self.recipe: Recipe = self.settings.recipe
        self.backend = backend
        self._own_backend = backend is None  # built here from the config, so closed here
        self.stop_requested = False

    def execute(self) -> dict:
        c = self.config
        shard = self.settings.shard
        store = ShardStore(self.settings.output, shard[0], shard[1], docs_per_file=c.docs_per_file)
        self.store = store
        replayed = store.open(repair=self._document_id_of if c.repair else None)
        try:
            fingerprint, inputs, self.duplicate_candidates = check_run_file(store, self.settings)
            if self.backend is None:
                self.backend = make_backend(c, self.settings.context_tokens())
            self.renderer = ChatRenderer(self.backend.tokenizer)
            return self._loop(replayed, fingerprint, inputs)
        finally:
            store.close()
            if getattr(self, "graph", None) is not None:
                self.graph.close()
            if self._own_backend and self.backend is not None:
                self.backend.close()

    def _document_id_of(self, key: str) -> str | None:
        """The id of the document a work key writes (final-step keys), else None: what
        `--repair` looks for in the data files."""
        source_id, chunk, recipe, step, k = json.loads(key)
        if step != self.recipe.steps[-1].name or chunk is None:
            return None
        return document_id(recipe, source_id, chunk, k)

    # ------------------------------------------------------------------ the loop
    def _start(self, replayed: Replayed) -> None:
        """This invocation's state, from what the commit log says was done."""
        c = self.config
        retry = set(replayed.retryable) if c.retry_failed else set()
        reopened = {json.loads(k)[0] for k in retry}
        self.sources_done = replayed.sources_done - reopened  # skipped when read again
        intermediate: dict[str, dict] = {}
        if len(self.recipe.steps) > 1:
            for rec in self.store.read_intermediate():
                if rec["source_id"] not in self.sources_done:
                    intermediate[rec["key"]] = rec
        self.planner = WorkPlanner(self.recipe, replayed.status, retry, intermediate, self.renderer.count,
                                   c.chunk_tokens)
        self.outstanding: dict[str, int] = defaultdict(int)  # source id -> its items not finished
        self.high: deque[WorkItem] = deque()  # later steps: drain first, they finish books
        self.low: deque[WorkItem] = deque()
        self.source_chunks: dict[str, int] = {}  # source id -> chunks, until the source is finished
        self.counted = set(replayed.sources_counted)  # sources already in the "sources"/"chunks" counts
        self.fidelity = Tally(self.store.count)  # committed with the outcomes it describes
        self.session = Counter()  # this invocation only

    def _loop(self, replayed: Replayed, fingerprint: dict, inputs: list[dict]) -> dict:
        c = self.config
        store = self.store
        backend = self.backend
        assert backend is not None
        self._start(replayed)
        already = dict(replayed.counters)
        input_counts: dict = {}
        reader = self._sources(input_counts)
        reader_done = False
        sources_seen = 0
        self.t_start = time.monotonic()
        self.t_commit = self.t_log = self.t_start

        progress = c.progress if c.progress is not None else sys.stderr.isatty()
        self.bar = None
        if progress and not c.quiet:
            from tqdm import tqdm

            self.bar = tqdm(unit="doc", desc=f"generation {self.recipe.name} {store.tag}", dynamic_ncols=True,
                            initial=int(already.get("documents", 0)), file=sys.stderr)

        previous_handlers = {}

        def on_signal(signum, _frame):
            self.stop_requested = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous_handlers[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread
                pass

        try:
            while not self.stop_requested:
                while backend.inflight < backend.max_inflight and not self.stop_requested:
                    if self.high:
                        self._submit(self.high.popleft())
                    elif self.low:
                        self._submit(self.low.popleft())
                    elif not reader_done:
                        if c.limit is not None and sources_seen >= c.limit:
                            reader_done = True
                            continue
                        doc = next(reader, None)
                        if doc is None:
                            reader_done = True
                        else:
                            sources_seen += 1
                            self._plan(doc)
                            if store.pending >= c.commit_every:
                                self._maybe_commit()
                    else:
                        break
                if backend.inflight == 0:
                    if reader_done and not self.high and not self.low:
                        break
                    continue
                for result in backend.poll():
                    self._handle(result)
                if self.bar is not None:
                    elapsed = max(time.monotonic() - self.t_start, 1e-9)
                    self.bar.set_postfix_str(
                        f"{self.session['generated_tokens'] / elapsed:,.0f} tok/s, "
                        f"{self.session['filtered']} filtered, {self.session['failed']} failed", refresh=False)
                self._maybe_commit()
            self._maybe_commit(force=True)
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            if self.bar is not None:
                self.bar.close()

        complete = reader_done and not self.high and not self.low and backend.inflight == 0 and c.limit is None
        elapsed_now = time.monotonic() - self.t_start
        manifest = build_manifest(self.settings, store, backend.describe(), fingerprint, inputs, input_counts,
                                  complete, self.session, elapsed_now)
        if self.stop_requested:
            manifest["interrupted"] = True
        path = self.settings.output / manifest_name(*self.settings.shard)
        write_json_atomic(path, manifest)
        if not c.quiet:
            print_summary(manifest, path, file=sys.stderr)
        return manifest

    def _sources(self, input_counts: dict) -> Iterator[SourceDoc]:
        """This shard's sources: input documents, or samples of a concept graph (SynthLLM levels 2, 3)."""
        c = self.config
        if self.recipe.sources == "documents":
            return iter_documents(self.settings.paths, c.text_key, c.id_key, self.settings.shard, input_counts,
                                  self.duplicate_candidates)
        self.graph = ConceptGraph.load(c.graph)
        return iter_graph_sources(self.recipe.sources, self.graph, c.seed, self.settings.shard,
                                  self.settings.sampling_options())

    def _maybe_commit(self, force: bool = False) -> None:
        """Commit every `commit_every` keys or `commit_seconds` (and at the end: `force`)."""
        c = self.config
        now = time.monotonic()
        if force or self.store.pending >= c.commit_every or (now - self.t_commit) >= c.commit_seconds:
            if self.store.commit(now - self.t_commit):
                self.t_commit = now
                if self.bar is None and not c.quiet and (force or now - self.t_log >= 60):
                    self.t_log = now  # a log line instead of a bar (batch jobs)
                    elapsed = max(now - self.t_start, 1e-9)
                    session = self.session
                    print(f"generation {self.recipe.name} {self.store.tag}: {session['documents']:,} docs "
                          f"({session['documents'] / elapsed:.2f} docs/s, "
                          f"{session['generated_tokens'] / elapsed:,.0f} tok/s), {session['filtered']} filtered, "
                          f"{session['failed']} failed", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ bookkeeping per source
    def _plan(self, doc: SourceDoc) -> None:
        """Queue the work items of a source just read (or record why it cannot be read)."""
        if doc.source_id in self.sources_done:
            return
        if doc.error is not None:
            key = work_key(doc.source_id, None, self.recipe.name, INPUT_STEP)
            if not self.planner.is_done(key):
                self._fail(key, None, doc, doc.error, doc.detail, retryable=False)
                self._source_finished(doc.source_id)
            return
        n_chunks, todo = self.planner.source_items(doc)
        self.source_chunks[doc.source_id] = n_chunks
        if not todo:
            self._source_finished(doc.source_id)
            return
        self.outstanding[doc.source_id] += len(todo)
        self.low.extend(todo)

    def _source_finished(self, source_id: str) -> None:
        self.store.source_done(source_id)
        if source_id not in self.counted:  # a source reopened by --retry-failed is not counted twice
            self.counted.add(source_id)
            self.store.count("sources")
            self.store.count("chunks", self.source_chunks.get(source_id, 0))
        self.source_chunks.pop(source_id, None)

    def _finish_item(self, item: WorkItem, spawned: int = 0) -> None:
        """`item` is done (and planned `spawned` items of the next step)."""
        self.outstanding[item.source_id] += spawned - 1
        if self.outstanding[item.source_id] == 0:
            del self.outstanding[item.source_id]
            self._source_finished(item.source_id)

    def _fail(self, key: str, item: WorkItem | None, doc: SourceDoc | None, reason: str, detail: str,
              retryable: bool, extra: dict | None = None) -> None:
        record = {"key": key, "reason": reason, "detail": detail, "retryable": retryable, "time": time.time()}
        if item is not None:
            step = self.recipe.steps[item.step_index]
            record.update(source_id=item.source_id, chunk=item.chunk, recipe=self.recipe.name, step=step.name,
                          k=item.k)
        if doc is not None:
            record.update(source_id=doc.source_id, recipe=self.recipe.name, step=INPUT_STEP, path=doc.path,
                          line=doc.line)
        record.update(extra or {})
        self.store.write_failure(record)
        self.store.mark_failed(key, reason, retryable)
        self.session["failed"] += 1

    # ------------------------------------------------------------------ requests and results
    def _submit(self, item: WorkItem) -> None:
        """Render the item's prompt, clip its max new tokens to the context, send it."""
        backend = self.backend
        step = self.recipe.steps[item.step_index]
        messages = build_messages(step, item.values)
        try:
            used, _text, ids = self.renderer.render(messages)
        except Exception as exc:
            self._fail(item.key, item, None, "chat_template_error", f"{type(exc).__name__}: {exc}", retryable=False)
            self._finish_item(item)
            return
        limit = backend.max_model_len
        max_tokens = self.settings.max_new[step.name]
        if limit is not None:
            if len(ids) >= limit:
                self._fail(item.key, item, None, "prompt_too_long",
                           f"prompt has {len(ids)} tokens, the model's context is {limit}", retryable=False,
                           extra={"prompt_tokens": len(ids)})
                self._finish_item(item)
                return
            max_tokens = min(max_tokens, limit - len(ids))
        seed = request_seed(self.config.seed, item.source_id, item.chunk, self.recipe.name, step.name, item.k)
        sampling = self.settings.sampling
        backend.submit(Request(key=item.key, messages=used, prompt_token_ids=ids, max_tokens=max_tokens, seed=seed,
                               temperature=sampling["temperature"], top_p=sampling["top_p"], tag=item,
                               repetition_penalty=sampling.get("repetition_penalty"),
                               frequency_penalty=sampling.get("frequency_penalty")))
        self.store.count("requests")

    def _handle(self, result: Result) -> None:
        """File one result: failed, filtered, an intermediate output (plans the next step's
        items) or an output document."""
        recipe, store, session = self.recipe, self.store, self.session
        item: WorkItem = result.request.tag
        step = recipe.steps[item.step_index]
        final = item.step_index == len(recipe.steps) - 1
        store.count("prompt_tokens", result.prompt_tokens)
        store.count("generated_tokens", result.output_tokens)
        session["generated_tokens"] += result.output_tokens
        if result.error is not None:
            self._fail(item.key, item, None, result.error, result.detail, result.retryable,
                       extra={"attempts": result.attempts})
            self._finish_item(item)
            return
        target = step.target_tokens(item.source_tokens)
        # A concept list cut at the token limit is parsed (its last, incomplete line dropped), never dropped whole.
        finish = None if step.parse else result.finish_reason
        filtered = apply_filters(result.text, result.output_tokens, finish, target,
                                 self.settings.filters[step.name], self.renderer.count)
        for mod in filtered.modified:
            store.count(f"modified.{step.name}.{mod}")
        parsed = None
        if step.parse == "concepts" and filtered.dropped is None:
            try:
                parsed = extraction_fields(filtered.text, item.values["document"],
                                           truncated=result.finish_reason == "length")
            except ConceptParseError as exc:  # kept in failures/ with the raw output, never guessed at
                if final:
                    self.fidelity.add(item.values["document"], result.text, result.output_tokens, None)
                self._fail(item.key, item, None, exc.reason, exc.detail, retryable=False,
                           extra={"output": result.text, "output_tokens": result.output_tokens})
                self._finish_item(item)
                return
            error = parsed.get("concepts_error")
            if error:  # the model's list is lost (its raw output kept here), the document and its phrases are not
                store.write_failure({"key": item.key, **error, "document_kept": True, "time": time.time(),
                                     "source_id": item.source_id, "chunk": item.chunk, "recipe": recipe.name,
                                     "step": step.name, "k": item.k, "output": result.text,
                                     "output_tokens": result.output_tokens})
                store.count(f"modified.{step.name}.{error['reason']}")
            filtered.text = "\n".join(parsed["concepts"])
        if final:
            self.fidelity.add(item.values["document"], result.text, result.output_tokens,
                              None if filtered.dropped is not None else filtered.text)
        if filtered.dropped is not None:  # kept in failures/ with its text, counted by reason (and rule)
            store.write_failure({"key": item.key, "reason": filtered.dropped, "filtered": True, "time": time.time(),
                                 "source_id": item.source_id, "chunk": item.chunk, "recipe": recipe.name,
                                 "step": step.name, "k": item.k, "output": result.text,
                                 "output_tokens": result.output_tokens, "finish_reason": result.finish_reason})
            store.mark(item.key, "filtered")
            store.count(f"dropped.{step.name}.{filtered.dropped}")
            session["filtered"] += 1
            self._finish_item(item)
            return
        sampling = {**self.settings.sampling, "max_tokens": result.request.max_tokens, "seed": result.request.seed}
        if not final:
            store.write_intermediate({
                "key": item.key, "source_id": item.source_id, "chunk": item.chunk, "recipe": recipe.name,
                "step": step.name, "k": item.k, "audience": item.audience, "text": filtered.text,
                "output_tokens": filtered.tokens, "finish_reason": result.finish_reason, "sampling": sampling,
            })
            store.mark(item.key, "ok")
            store.count(f"intermediate.{step.name}")
            nxt = self.planner.expand(self.planner.next_items(item, filtered.text))
            self.high.extend(nxt)
            self._finish_item(item, spawned=len(nxt))
            return
        store.write_document(self._output_document(item, step, result, filtered, sampling, parsed))
        store.mark(item.key, "ok")
        store.count("documents")
        store.count("document_tokens", filtered.tokens)
        session["documents"] += 1
        self._finish_item(item)
        if self.bar is not None:
            self.bar.update(1)

    def _output_document(self, item: WorkItem, step: Step, result: Result, filtered: FilterResult,
                         sampling: dict, concepts: dict | None = None) -> dict:
        """One line of the output JSONL (docs/formats.md)."""
        recipe = self.recipe
        text = filtered.text
        if recipe.output is not None:  # e.g. "Question: {question}\n\nAnswer: {answer}"
            text = render(recipe.output, {**item.values, step.name: filtered.text}).strip()
        record = {
            "id": document_id(recipe.name, item.source_id, item.chunk, item.k),
            "text": text,
            "source_id": item.source_id,
            "chunk": item.chunk,
            "n_chunks": item.n_chunks,
            "recipe": recipe.name,
            "step": step.name,
        }
        if len(recipe.steps) > 1 or step.repeat is not None:
            record["book_id"] = document_id(recipe.name, item.source_id, item.chunk, None)
        if item.k is not None:
            record["chapter" if step.name == "chapter" else "k"] = item.k
        if item.audience is not None:
            record["audience"] = item.audience
        if concepts is not None:  # concept extraction: the lists (generation/synthllm/concepts.py) and the text they came from
            record.update(concepts)
            record["document"] = item.values["document"]
        record.update(item.extra)
        record.update({
            "prompt_version": recipe.prompt_version,
            "generator": self.settings.generator,
            "sampling": sampling,
            "source_tokens": item.source_tokens,
            "prompt_tokens": result.prompt_tokens,
            "output_tokens": filtered.tokens,
            "generated_tokens": result.output_tokens,
            "finish_reason": result.finish_reason,
        })
        return record


def run(config: RunConfig, backend: Backend | None = None) -> dict:
    """Run (or resume) one worker's share of a generation job. Returns its manifest."""
    return Run(config, backend).execute()
