"""Post-filters on crafted strings, the Gopher repetition rules on the looping outputs SmolLM2-135M
wrote in the demo, and repetitive outputs through `generation run`: dropped, counted per rule,
kept in failures/ with their text."""

from __future__ import annotations

import pytest

from generation.run.config import RunConfig
from generation.run.loop import run as generation_run
from generation.text.filters import FilterConfig, apply_filters
from generation.text.recipe_files import get_recipe
from generation.text.repetition import GOPHER, GOPHER_THRESHOLDS, RULES, GopherRepetition
from study.tiny_llama import sample_text

from genhelpers import EchoBackend, read_jsonl, read_outputs, write_jsonl


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def config():
    # the paper set's filters, with token counts taken as word counts for readability
    return FilterConfig.from_dict(get_recipe("hq").final.filters)


BODY = sample_text(60, seed=0)  # 60 words that do not repeat themselves


def varied(n: int, seed: int = 1) -> str:
    return sample_text(n, seed=seed)


def run(text, config, tokens=None, finish="stop", target=100):
    return apply_filters(text, words(text) if tokens is None else tokens, finish, target, config, words)


def test_a_good_document_is_kept_unchanged(config):
    result = run(BODY, config)
    assert (result.dropped, result.modified, result.text, result.tokens) == (None, [], BODY, 60)


@pytest.mark.parametrize(
    "preamble",
    [
        "Sure, here is the rephrased article:\n",
        "Sure! Here's a rewritten version of the document in Wikipedia style.\n\n",
        "Certainly! Below is the article.\n",
        "Here are the question-answer pairs:\n",
        "Rephrased article:\n",
        "Okay.\nHere is the article:\n",
    ],
)
def test_preambles_are_stripped_and_tokens_recounted(config, preamble):
    result = run(preamble + BODY, config)
    assert result.dropped is None
    assert result.text == BODY
    assert result.tokens == 60
    assert result.modified == ["preamble_stripped"]


@pytest.mark.parametrize("text", ["Sure, here is the rephrased article:", "Here is the article:\n\n", "Certainly!"])
def test_a_bare_preamble_is_dropped(config, text):
    assert run(text, config).dropped == "bare_preamble"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request. " + BODY,
        "I cannot rewrite this document because it contains personal data. " + BODY,
        "As an AI language model, I do not have opinions. " + BODY,
        "Sure, here is the article:\nI am sorry, I can not do this. " + BODY,
    ],
)
def test_refusals_are_dropped(config, text):
    assert run(text, config).dropped == "refusal"


def test_a_document_mentioning_sorry_later_is_kept(config):
    assert run("The king said he was sorry. " + BODY, config).dropped is None


def test_too_short_truncated_too_long_and_empty(config):
    assert run(varied(49), config).dropped == "too_short"
    assert run(varied(50), config).dropped is None
    assert run(BODY, config, finish="length").dropped == "truncated"
    assert run(varied(301), config, target=100).dropped == "too_long"
    assert run(varied(300), config, target=100).dropped is None
    assert run("   \n ", config).dropped == "empty"


def test_filters_are_configurable(config):
    lenient = FilterConfig.from_dict(get_recipe("hq").final.filters,
                                     {"min_tokens": 0, "drop_truncated": False, "max_target_factor": 0,
                                      "drop_refusals": False, "strip_preamble": False, "drop_repetitive": False})
    assert run("short", lenient).dropped is None
    assert run(BODY, lenient, finish="length").dropped is None
    assert run(" ".join(["w"] * 10_000), lenient, target=10).dropped is None
    assert run("I'm sorry, no.", lenient).dropped is None
    kept = run("Sure, here is the article:\n" + BODY, lenient)
    assert kept.dropped is None and kept.text.startswith("Sure")
    assert run(LOOPS["national_post"], lenient).dropped is None


# The three kinds of loop the issue quotes from the demo's SmolLM2-135M corpora (shapes as written).
LOOPS = {
    "national_post": "The National Post is a leading publication in the United States.\n" * 10,
    "article_written": "Article written in English and full sentences. " * 20,
    "chapters": "Textbook outline:\n" + "\n".join(f"- Chapter {i}" for i in range(1, 55)),
    "qa_loop": "\n\n".join("Question: What did the President say about the treasury and the public debt?\n"
                           "Answer: The President said the treasury must pay the public debt." for _ in range(6)),
}


@pytest.mark.parametrize("name", sorted(LOOPS))
def test_the_demos_loops_are_dropped_as_repetitive(config, name):
    result = run(LOOPS[name], config)
    assert result.dropped is not None and result.dropped.startswith("repetitive.")
    assert result.dropped.split(".", 1)[1] in RULES


def test_each_gopher_rule_by_hand():
    """Each rule's share on a text built to fail it alone, against the published threshold."""
    rules = GopherRepetition()
    assert rules.thresholds == GOPHER_THRESHOLDS == {
        "dup_line_frac": 0.30, "dup_para_frac": 0.30, "dup_line_char_frac": 0.20, "dup_para_char_frac": 0.20,
        "top_2gram": 0.20, "top_3gram": 0.18, "top_4gram": 0.16, "dup_5gram": 0.15, "dup_6gram": 0.14,
        "dup_7gram": 0.13, "dup_8gram": 0.12, "dup_9gram": 0.11, "dup_10gram": 0.10}
    lines = [sample_text(12, seed=i).replace("\n", " ") for i in range(7)]
    text = "\n".join(lines + lines[:3])  # 10 lines, 3 repeat an earlier one
    shares = rules.shares(text)
    assert shares["dup_line_frac"] == pytest.approx(0.3)  # not above 0.30: passes this rule...
    repeated = sum(len(line) for line in lines[:3])
    assert shares["dup_line_char_frac"] == pytest.approx(repeated / len(text)) and repeated / len(text) > 0.20
    assert rules.check(text) == "dup_line_char_frac"  # ...but not the next one
    text = "\n".join(lines + lines[:4])
    assert rules.shares(text)["dup_line_frac"] == pytest.approx(4 / 11) and rules.check(text) == "dup_line_frac"
    # one repeated 2-gram covering a quarter of the word characters, the rest distinct
    words = sample_text(200, seed=3).split()
    distinct = list(dict.fromkeys(w.lower().strip(".,") for w in words))[:40]
    body = " ".join(distinct)
    gram = "zebra yak"
    text = " ".join([body] + [gram] * 12)
    share = rules.shares(text)["top_2gram"]
    assert share == pytest.approx(12 * 8 / (len(body.replace(" ", "")) + 12 * 8))
    assert share > 0.20 and rules.check(text) == "top_2gram"
    assert rules.check(" ".join([body] + [gram] * 4)) is None  # 4 repeats: under the threshold
    # a duplicated 10-gram: the words of its repeats, first copy excluded
    ten = "one two three four five six seven eight nine ten"
    text = " ".join([body, ten, body[:0], ten])
    expected = len(ten.replace(" ", "")) / len(text.replace(" ", ""))
    assert rules.shares(text)["dup_10gram"] == pytest.approx(expected)
    assert GopherRepetition(min_words=1).check("a b") is None
    assert GOPHER.check("the United States " * 4) is None  # 12 words: too short to be judged (Gopher: 50+)
    with pytest.raises(ValueError, match="unknown repetition rule"):
        GopherRepetition(thresholds={"dup_word": 0.1})


def test_prose_and_real_speech_pass(config):
    speech = ("Fellow-Citizens of the Senate and House of Representatives: In meeting you again I feel much "
              "satisfaction in being able to repeat my congratulations on the favorable prospects which continue to "
              "distinguish our public affairs. The abundant fruits of another year have blessed our country with "
              "plenty and with the means of a flourishing commerce. The progress of public credit is witnessed by a "
              "considerable rise of American stock abroad as well as at home, and the revenues allotted for this and "
              "other national purposes have been productive beyond the calculations by which they were regulated.")
    assert GOPHER.check(speech) is None and run(speech, config).dropped is None
    assert all(GOPHER.check(sample_text(n, seed=s)) is None for n in (50, 400, 3000) for s in range(5))


class LoopBackend(EchoBackend):
    """Loops like SmolLM2-135M for the sources whose id starts with "loop"."""

    def poll(self):
        results = super().poll()
        for result in results:
            if result.error is None and result.request.key.startswith('["loop'):
                result.text = LOOPS["national_post"]
        return results


def test_repetitive_outputs_are_counted_per_rule_and_kept_in_failures(tmp_path, tiny_tokenizer):
    docs = [{"id": f"loop{i}", "text": sample_text(40, seed=i)} for i in range(3)]
    docs += [{"id": f"ok{i}", "text": sample_text(40, seed=10 + i)} for i in range(4)]
    write_jsonl(tmp_path / "in.jsonl", docs)
    config = RunConfig(recipe="hq", inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / "out"), model="echo",
                       filters={"min_tokens": 1, "max_target_factor": 0}, quiet=True, max_new_tokens={"*": 256})
    manifest = generation_run(config, LoopBackend(tiny_tokenizer, words=80))
    assert sorted(r["source_id"] for r in read_outputs(tmp_path / "out")) == [f"ok{i}" for i in range(4)]
    rule = GOPHER.check(LOOPS["national_post"])
    assert rule == "dup_line_frac"
    assert manifest["filters"]["dropped"] == {f"repetitive.{rule}": 3}
    assert manifest["filters"]["config"]["article"]["drop_repetitive"] is True
    kept = [f for f in read_jsonl(tmp_path / "out" / manifest["failures_file"]) if f.get("filtered")]
    assert sorted(f["source_id"] for f in kept) == ["loop0", "loop1", "loop2"]
    assert all(f["reason"] == f"repetitive.{rule}" and f["output"] == LOOPS["national_post"] for f in kept)
    assert manifest["failures"]["total"] == 0  # filtered, not failed: a rerun does not ask again
    fidelity = manifest["fidelity"]
    assert fidelity["degenerate_share"] == round(3 / 7, 4) and fidelity["degenerate_share_kept"] == 0.0
    # the filter off: the same loops are kept, and the fidelity block says so (after = before)
    manifest = generation_run(RunConfig(**{**config.__dict__, "output": str(tmp_path / "off"),
                                           "filters": {**config.filters, "drop_repetitive": False}}),
                              LoopBackend(tiny_tokenizer, words=80))
    assert len(read_outputs(tmp_path / "off")) == 7 and manifest["filters"]["dropped"] == {}
    assert manifest["fidelity"]["degenerate_share"] == manifest["fidelity"]["degenerate_share_kept"] == round(3 / 7, 4)


def test_shares_count_overlapping_occurrences_once():
    shares = GOPHER.shares("Question:\n" * 60)  # the qa loop SmolLM2 wrote: one line, 60 times
    assert shares["top_2gram"] == shares["top_4gram"] == 1.0 and shares["dup_line_frac"] == pytest.approx(59 / 60)
    assert GOPHER.check("Question:\n" * 60) == "dup_line_frac"
