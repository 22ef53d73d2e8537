"""Recipes are data: the paper's prompts verbatim, user prompt sets, validation, rendering."""

from __future__ import annotations

import json

import pytest

from generation.text.chat import ChatRenderer
from generation.text.recipe_files import PromptSetError, get_recipe, load_prompt_set, load_recipes
from generation.text.recipes import build_messages, merge_system_into_user, render

SYSTEM = "Provide direct and detailed response to the instructions without adding additional notes."
HQ = (
    "For the following document, regardless of its original content or formatting, write a full article of the "
    "same content in high quality English language as in texts on Wikipedia: {document}. Provide the rephrased "
    "article without any additional notes. Long article with full length and complete details. Rephrased article:"
)
QA = (
    "For the following document, regardless of its original content or formatting, convert it into a comprehensive "
    "list of question-answer pairs with multiple tags of \u201cQuestion:\u201d followed by \u201cAnswer:\u201d, where "
    "questions and answers cover complete information of the original document. Document: {document}. Provide the "
    "converted question-answer pairs without any additional notes. Question-answer pairs with corresponding tags "
    "(\u201cQuestion:\u201d, \u201cAnswer:\u201d):"
)
OUTLINE = (
    "Imagine you are a prolific author tasked with writing a textbook. You are working on writing a textbook "
    "involving the knowledge and information of the following text. Text: {document}\n Your task is to write an "
    "outline for the textbook. Your target audiences are {audience}. The textbook has 10 chapters in total plus "
    "title, introduction, and appendices. Textbook outline:"
)
CHAPTER = (
    "Imagine you are a prolific author tasked with writing a textbook. You are working on writing a textbook with "
    "the following outline.\n Outline: {outline} \n Your task is to write Chapter {k} of the textbook. Your target "
    "audiences are {audience}. Include exercises at the end of the chapter to test the reader's knowledge of the "
    "chapter and then provide reference answers to each question."
)


def test_paper_prompts_are_verbatim():
    recipes = load_recipes()
    assert set(recipes) >= {"hq", "qa", "textbook"}
    assert recipes["hq"].final.user == HQ
    assert recipes["qa"].final.user == QA
    outline, chapter = recipes["textbook"].steps
    assert (outline.name, outline.user, outline.repeat) == ("outline", OUTLINE, None)
    assert (chapter.name, chapter.user, chapter.repeat) == ("chapter", CHAPTER, 10)
    paper = [r for r in recipes.values() if r.set_name == "paper"]
    assert {r.name for r in paper} == {"hq", "qa", "textbook"}  # the other built-in sets are not the paper's
    for recipe in paper:
        assert all(step.system == SYSTEM for step in recipe.steps)
        assert recipe.sampling == {"temperature": 0.7, "top_p": 0.95}
        assert recipe.prompt_version == "paper/1"
    assert recipes["textbook"].audiences == (
        "grade school students", "college students", "field experts", "general public")


def test_audiences_spread_evenly_and_deterministically():
    textbook = get_recipe("textbook")
    got = [textbook.audience_for(i) for i in range(40)]
    assert all(got.count(a) == 10 for a in textbook.audiences)
    assert got == [textbook.audience_for(i) for i in range(40)]
    assert get_recipe("hq").audience_for(3) is None


def test_user_prompt_set_adds_a_style_without_code(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "kind: synthscale.prompt_set\nname: mine\nversion: '2'\nsystem: Be brief.\n"
        "sampling: {temperature: 0.5}\n"
        "filters: {min_tokens: 3}\n"
        "recipes:\n"
        "  eli5:\n"
        "    description: for a child\n"
        "    steps:\n"
        "      - name: rewrite\n"
        "        max_new_tokens: 64\n"
        "        target: {per_source_token: 1.0, min: 16}\n"
        "        user: 'Explain to a five-year-old: {document} (keep {{braces}} and {\"json\": 1} as they are)'\n",
        encoding="utf-8",
    )
    recipes = load_recipes([str(path)])
    assert "eli5" in recipes and "hq" in recipes
    eli5 = recipes["eli5"]
    assert eli5.prompt_version == "mine/2"
    assert eli5.sampling == {"temperature": 0.5, "top_p": 0.95}
    assert eli5.final.filters["min_tokens"] == 3
    messages = build_messages(eli5.final, {"document": "Cats {purr}."})
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'Explain to a five-year-old: Cats {purr}. (keep {braces} and {"json": 1} as they are)'},
    ]
    # JSON works too, and a user set may shadow a built-in recipe name
    jpath = tmp_path / "hq.json"
    jpath.write_text(json.dumps({"kind": "synthscale.prompt_set", "name": "alt", "version": "1",
                                 "recipes": {"hq": {"steps": [{"name": "a", "user": "Rewrite: {document}"}]}}}))
    assert get_recipe("hq", [str(jpath)]).prompt_version == "alt/1"
    assert get_recipe("hq").prompt_version == "paper/1"


@pytest.mark.parametrize(
    "recipes, message",
    [
        ({"r": {"steps": [{"name": "a", "user": "no document here"}]}}, "no step uses {document}"),
        ({"r": {"steps": [{"name": "a", "user": "{document} {outline}"}]}}, "unknown placeholder"),
        ({"r": {"steps": [{"name": "a", "user": "{document} {k}"}]}}, "unknown placeholder"),
        ({"r": {"steps": [{"name": "a", "user": "{document}", "repeat": 2}, {"name": "b", "user": "{a}"}]}},
         "only the last step may repeat"),
        ({"r": {"steps": [{"name": "a", "user": "{document}", "max_new_tokens": 0}]}}, "max_new_tokens"),
        ({"r": {"steps": [{"name": "a", "user": "{document}", "filters": {"min_tokenz": 1}}]}}, "unknown key"),
        ({"r": {"steps": [{"name": "a", "user": "{document}", "filters": {"refusal_patterns": ["("]}}]}},
         "bad regular expression"),
        ({"r": {"steps": []}}, "non-empty list"),
        ({"r": {"sampling": {"repetition_penalty": 0}, "steps": [{"name": "a", "user": "{document}"}]}},
         "repetition_penalty: must be in (0, 2]"),
        ({"r": {"sampling": {"frequency_penalty": 3}, "steps": [{"name": "a", "user": "{document}"}]}},
         "frequency_penalty: must be in [-2, 2]"),
        ({"r": {"steps": [{"name": "a", "user": "{document}", "user_one_document": "{document}"}]}},
         "user_one_document: a prompt text, in a recipe with sources: concept_walk"),
    ],
)
def test_bad_prompt_sets_are_refused_with_the_field(tmp_path, recipes, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kind": "synthscale.prompt_set", "name": "bad", "version": "1", "recipes": recipes}))
    with pytest.raises(PromptSetError, match="bad.json") as info:
        load_prompt_set(str(path))
    assert message in str(info.value)


def test_unknown_recipe_lists_the_available_ones():
    with pytest.raises(PromptSetError, match="available: hq, qa, synthllm-concepts, synthllm-l1, synthllm-l2, synthllm-l3, textbook"):
        get_recipe("poetry")


def test_render_substitutes_known_placeholders_only():
    assert render("{document} and {x} {k} {{k}}", {"document": "D {k}", "k": 3}) == "D {k} and {x} 3 {k}"


def test_chat_template_is_applied(tiny_tokenizer):
    renderer = ChatRenderer(tiny_tokenizer)
    step = get_recipe("hq").final
    used, text, ids = renderer.render(build_messages(step, {"document": "Rivers flow."}))
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM)
    assert "Wikipedia: Rivers flow.. Provide" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert ids[0] == tiny_tokenizer.bos_token_id and ids.count(tiny_tokenizer.bos_token_id) == 1
    assert tiny_tokenizer.decode(ids) == text
    assert used[0]["role"] == "system"


def test_templates_without_a_system_role_get_it_in_the_user_turn(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
        "[INST] {{ m['content'] }} [/INST]{% endfor %}"
    )
    renderer = ChatRenderer(tok)
    used, text, _ = renderer.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert used == [{"role": "user", "content": "S\n\nU"}]
    assert text == "<|begin_of_text|>[INST] S\n\nU [/INST]"
    assert renderer.system_supported is False
    assert merge_system_into_user([{"role": "user", "content": "x"}]) == [{"role": "user", "content": "x"}]


def test_a_tokenizer_without_chat_template_is_refused(tiny_tokenizer):
    import copy

    from generation.text.chat import ChatTemplateError

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatRenderer(tok)


def test_penalties_from_a_recipe_or_the_command_reach_requests_and_the_manifest(tmp_path, tiny_tokenizer):
    """repetition_penalty / frequency_penalty: a recipe's sampling (the paper's recipes set none),
    overridden by the command; sent with every request, recorded in the manifest and each record."""
    from generation.run.loop import run
    from generation.run.config import RunConfig
    from study.tiny_llama import sample_text

    from genhelpers import EchoBackend, read_outputs, write_jsonl

    assert all("penalty" not in "".join(r.sampling) for r in load_recipes().values())  # the paper's as it set them
    path = tmp_path / "loops.yaml"
    path.write_text("kind: synthscale.prompt_set\nname: loops\nversion: '1'\nrecipes:\n  calm:\n"
                    "    sampling: {repetition_penalty: 1.2}\n"
                    "    steps: [{name: a, user: 'Rewrite: {document}', max_new_tokens: 32}]\n", encoding="utf-8")
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": sample_text(30, seed=i)} for i in range(3)])

    def go(out, **kw):
        backend = EchoBackend(tiny_tokenizer, words=20)
        config = RunConfig(recipe=kw.pop("recipe", "calm"), inputs=[str(tmp_path / "in.jsonl")], output=str(tmp_path / out),
                           model="echo", prompt_sets=[str(path)], filters={"min_tokens": 1}, quiet=True, **kw)
        return run(config, backend), backend

    manifest, backend = go("a")
    assert {(r.repetition_penalty, r.frequency_penalty) for r in backend.submitted} == {(1.2, None)}
    assert manifest["sampling"]["repetition_penalty"] == 1.2 and "frequency_penalty" not in manifest["sampling"]
    assert all(r["sampling"]["repetition_penalty"] == 1.2 for r in read_outputs(tmp_path / "a"))
    manifest, backend = go("b", repetition_penalty=1.05, frequency_penalty=0.3)
    assert {(r.repetition_penalty, r.frequency_penalty) for r in backend.submitted} == {(1.05, 0.3)}
    assert manifest["fingerprint"]["sampling"] == {"temperature": 0.7, "top_p": 0.95, "repetition_penalty": 1.05,
                                                   "frequency_penalty": 0.3}
    manifest, backend = go("c", recipe="hq")  # the paper's recipe: no penalty sent, none recorded
    assert backend.submitted and all(r.penalties() == {} for r in backend.submitted)
    assert set(manifest["sampling"]) == {"temperature", "top_p", "max_new_tokens"}
