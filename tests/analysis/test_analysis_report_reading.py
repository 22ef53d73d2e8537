"""A report a person can read (issue 17, part 3): the demo's design plans only fits it can make, and
its report, rendered in headless Chromium at 1280 px, leads with the measured comparison, has one
identification table, a short summary, tokens as text, figures that decode, nothing wider than the
page, and is at most 6,000 px tall."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

import study
from analysis.cli import main
from analysis.core.settings import AnalysisConfig
from analysis.data.table import read_results
from analysis.multi import run_all
from recipes.shapes import get_shape
from study.config import StudyConfig, study_config
from synthscale.config import flatten_sections, load_yaml_mapping
from synthscale.files import sha256_file
from synthscale.units import parse_count
from tests.analysis.browser import chromium, measure
from tests.analysis.helpers import COARSE
from tests.analysis.simulate import DEMO_GENERATORS, DemoDesign, simulate_demo_table

DEMO_YAML = Path(study.__file__).with_name("demo.yaml")
MAX_HEIGHT = 6000
needs_chromium = pytest.mark.skipif(chromium() is None, reason="Debian's `chromium` is not installed (.ci/run installs "
                                                               "it: apt-get install chromium)")


def demo_design() -> DemoDesign:
    """The design study/demo.yaml plans, as `python -m study` reads it."""
    config = study_config(flatten_sections(load_yaml_mapping(DEMO_YAML), {f.name for f in fields(StudyConfig)}))
    corpora = [(r, DEMO_GENERATORS["smollm2"]) for r in config.recipes]
    if config.ablation_recipe:
        corpora.append((f"{config.ablation_recipe}-random", DEMO_GENERATORS["random"]))
    mixtures = {"natural": ("", "", 0.0)}
    for corpus, generator in corpora:
        for pct in config.ratios_pct:
            if pct:
                mixtures[f"{corpus}-{pct:g}pct"] = (corpus.removesuffix("-random"), generator, pct / 100)
    count = lambda values: tuple(float(parse_count(v)) for v in values)  # noqa: E731
    return DemoDesign(sizes=tuple(float(get_shape(s).N) for s in config.sizes),
                      baseline_sizes=tuple(float(get_shape(s).N) for s in config.baseline_sizes),
                      budgets=count(config.budgets), synthetic_budgets=count(config.synthetic_budgets),
                      mixtures=mixtures, repeated=("natural", f"{config.recipes[0]}-33pct"),
                      seeds=1 + len(config.seed_repeats))


def test_the_demo_plans_only_fits_it_can_make(tmp_path):
    """The laws the study fits (data and joint), with holdout: every planned fit can be made."""
    path = tmp_path / "results.csv"
    simulate_demo_table(demo_design()).to_csv(path, index=False)
    aset = run_all(read_results(path), AnalysisConfig(laws=("data", "joint"), bootstrap=0, fit=COARSE,
                                                      skip_unfittable=True))
    (analysis,) = aset.analyses
    assert analysis.unfitted == [], [m for _, m in analysis.unfitted][:3]
    assert all(h.usable for h in analysis.holdouts["data"]), [h.skipped for h in analysis.holdouts["data"]][:3]
    assert not [s for s in analysis.speedups if "too few runs" in s.get("short", "")]
    assert {r["status"] for r in analysis.identification} <= {"identified", "not identified"}


def _tokenizer(tmp_path) -> Path:
    """A byte-level BPE as the demo trains one, from a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the union of the states is strong", "a whale, the white whale of the sea",
                                   "questions and answers about the chapter"] * 20, trainer)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def _token_sets(tmp_path, write_tokens, names) -> tuple[Path, dict[str, Path]]:
    from data_prep.tokenizer_spec import load_tokenizer

    spec_path = _tokenizer(tmp_path)
    tokenizer = load_tokenizer(f"hf:{spec_path}")
    texts = {"test": ["the white whale of the sea", "the sea and the whale"] * 5,
             **{n: ["the union of the states", "questions about the chapter"] * 5 for n in names}}
    prefixes = {}
    for name, docs in texts.items():
        prefix = write_tokens(tmp_path / name, [tokenizer.encode(d) + [tokenizer.eod_id] for d in docs],
                              eod_id=tokenizer.eod_id, vocab_size=tokenizer.vocab_size)
        manifest = Path(f"{prefix}.manifest.json")
        document = json.loads(manifest.read_text())
        document["tokenizer"].update(spec=f"hf:{spec_path}", sha256=sha256_file(spec_path))
        manifest.write_text(json.dumps(document))
        prefixes[name] = prefix
    return prefixes.pop("test"), prefixes


def _corpus(folder: Path, recipe: str, generator: str) -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({
        "kind": "synthscale.synthetic", "version": 2, "complete": False, "limit": 10, "recipe": recipe,
        "generator": {"id": generator}, "counts": {"documents": 27, "document_tokens": 8613},
        "filters": {"dropped": {"truncated": 3}},
        "fidelity": {"outputs": 30, "pass_rate": 0.9, "mean_output_tokens": 287.0, "source_word_recall": 0.2}}))
    return folder


@needs_chromium
def test_the_demo_report_reads_in_a_browser(tmp_path, write_tokens):
    design = demo_design()
    path = tmp_path / "results.csv"
    simulate_demo_table(design).to_csv(path, index=False)
    corpora = {m.rsplit("-", 1)[0] for m in design.mixtures if m != "natural"}
    test, trains = _token_sets(tmp_path, write_tokens, ["natural", *sorted(corpora)])
    out = tmp_path / "report"
    args = ["report", str(path), "-o", str(out), "--law", "data", "--law", "joint", "--grid", "coarse",
            "--bootstrap", "4", "--domain-bootstrap", "2", "--skip-unfittable", "--label", "tiny-scale demonstration",
            "--unigram-test", str(test)]
    for name, prefix in trains.items():
        args += ["--unigram-train", f"{name}={prefix}"]
    for corpus in sorted(corpora):
        generator = DEMO_GENERATORS["random" if corpus.endswith("random") else "smollm2"]
        args += ["--corpus", f"{corpus}={_corpus(tmp_path / ('corpus-' + corpus), corpus.split('-')[0], generator)}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    fits = json.loads((out / "fits.json").read_text())

    # the summary: at most five short lines, the measured comparison before any fit
    summary = (out / "summary.txt").read_text().splitlines()
    assert len(summary) <= 5 and all(len(line) <= 220 for line in summary), summary
    assert summary[1].startswith("measured vs natural at equal (N, D): ") and "worse beyond the seed noise" in summary[1]
    # sections: the comparison first, then one identification table with a row per planned fit
    titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert titles[:3] == ["Summary", "Each mixture against natural text at equal (N, D)",
                          "Identification: which fits the runs pin down"]
    planned = 4 + 3 * (len(design.mixtures) - 1) + len(design.mixtures)  # data law per (mixture, N), joint per mixture
    assert len(fits["identification"]) == planned
    assert "too few runs" not in markdown and "Not fitted" not in markdown
    assert markdown.count("not identified: ") == 0  # no reason lists repeated outside the identification table
    # tokens as text, with their ids
    rare = fits["unigram"]["per_train"]["natural"]["frequent_in_test_rare_in_train"]
    assert rare and all(t["token"] for t in rare)
    assert f"{rare[0]['token']!r} ({rare[0]['token_id']})" in markdown

    page = measure(out / "report.html", tmp_path)
    figures = sorted((out / "figures").glob("*.png"))
    assert len(page["images"]) == len(figures) >= 4
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in page["images"]), page["images"]
    assert page["viewport"] == 1280 and page["width"] <= 1280 and page["wide"] == [], page["wide"]
    assert page["height"] <= MAX_HEIGHT, page["height"]


@needs_chromium
def test_a_report_with_findings_renders_within_the_page(results_csv, tmp_path):
    """Identified fits (speed-up, best ratio, E figures and tables): every figure decodes, none too wide."""
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["report", str(results_csv), "-o", str(out), "--grid", "coarse", "--bootstrap",
                                       "10", "--no-domains", "--extrapolate-D", "1T"])
    assert result.exit_code == 0, result.output
    page = measure(out / "report.html", tmp_path)
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"speedup", "irreducible_loss", "vs_natural", "data_scaling", "model_scaling"} <= names
    assert len(page["images"]) == len(names)
    assert all(i["complete"] and i["width"] > 0 for i in page["images"]), page["images"]
    assert page["width"] <= 1280 and page["wide"] == [], page["wide"]
