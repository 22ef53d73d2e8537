"""data_prep blend / grid / blend-check: token accounting, refusals, realised shares."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from data_prep.blend import make_blend, make_grid, open_tokenized, parse_weights, split_roles
from data_prep.blend_spec import BlendSpec
from data_prep.cli import main
from data_prep.megatron_blend import realised_shares
from data_prep.tokenize import TokenizeConfig, tokenize
from synthscale.errors import MissingInputError
from tests.data_prep.conftest import make_docs, write_jsonl


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, hf_tokenizer_path):
    """Three tokenized corpora of different sizes, one tokenizer."""
    root = tmp_path_factory.mktemp("blend")
    prefixes = {}
    for name, n_docs in (("cc", 3000), ("hq", 1500), ("qa", 1500)):
        docs = write_jsonl(root / f"{name}.jsonl", make_docs(n_docs, seed=hash(name) % 1000))
        prefix = root / name
        tokenize(TokenizeConfig((str(docs),), str(prefix), f"hf:{hf_tokenizer_path}", show_progress=False))
        prefixes[name] = prefix
    return prefixes


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_blend_records_accounting_and_megatron_data_path(tmp_path, datasets):
    out = tmp_path / "hq-33.yaml"
    code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}",
                       "--synthetic", "hq", "--weights", "cc=0.67,hq=0.33", "--tokens", "60K",
                       "--seq-length", "128", "--output", out)
    assert code == 0, output
    data = yaml.safe_load(out.read_text())
    assert data["data_path"] == [0.67, str(datasets["cc"].resolve()), 0.33, str(datasets["hq"].resolve())]
    assert data["tokens"] == 60_000 and data["synthetic_fraction"] == pytest.approx(0.33)
    cc, hq = data["sources"]
    available = json.loads(open(str(datasets["cc"]) + ".manifest.json").read())["tokens"]
    assert cc["tokens_requested"] == 40_200 and cc["tokens_available"] == available
    # what megatron-core reads: ceil(ceil(469 samples x 0.67) x 1.005) = 317 samples of 128 + 1 tokens
    assert cc["epochs"] == pytest.approx((317 * 128 + 1) / available)
    assert (hq["role"], hq["family"]) == ("synthetic", "hq") and (cc["role"], cc["family"]) == ("natural", "natural")
    assert data["family"] == "hq" and data["generator"] is None and len(data["identity_sha256"]) == 64
    assert len(cc["manifest_sha256"]) == 64
    # Megatron's own parser accepts the list as is.
    from megatron.core.datasets.utils import get_blend_from_list

    prefixes, weights = get_blend_from_list([str(x) for x in data["data_path"]])
    assert weights == [0.67, 0.33] and prefixes[1] == str(datasets["hq"].resolve())


def test_token_counts_accept_suffixes_and_exponents(tmp_path, datasets):
    for text, value in (("60K", 60_000), ("6e4", 60_000), ("0.06M", 60_000)):
        code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--weights", "cc=1",
                           "--tokens", text, "--seq-length", "64", "--output", tmp_path / "b.yaml")
        assert code == 0, output
        assert yaml.safe_load((tmp_path / "b.yaml").read_text())["tokens"] == value
    code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--weights", "cc=1",
                       "--tokens", "lots", "--seq-length", "64", "--output", tmp_path / "b.yaml")
    assert code == 2 and "'lots'" in output


@pytest.mark.parametrize(
    "weights, exit_code, message",
    [
        # a malformed value is a usage error (2); weights that do not fit the sources fail the check (1)
        (("cc=0.5,hq=0.4",), 1, "sum to 0.9, not 1"),
        (("cc=1.2,hq=-0.2",), 2, "weight of 'hq' must be a non-negative number"),
        (("cc=0.5,hq=0.25,wiki=0.25",), 1, "no --data for 'wiki'"),
        (("cc=1",), 1, "no weight for data 'hq'"),
        (("cc=half,hq=0.5",), 2, "weight of 'cc' is not a number"),
        (("cc=0.5", "cc=0.5"), 2, "'cc' is given twice"),
    ],
)
def test_bad_weights_are_refused_by_name(tmp_path, datasets, weights, exit_code, message):
    args = ["blend", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}"]
    for w in weights:
        args += ["--weights", w]
    code, output = cli(*args, "--tokens", "1000", "--seq-length", "64", "--output", tmp_path / "b.yaml")
    assert code == exit_code and message in output, output
    assert not (tmp_path / "b.yaml").exists()


def test_normalize_rescales(tmp_path, datasets):
    code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}",
                       "--weights", "cc=2,hq=1", "--normalize", "--tokens", "3000", "--seq-length", "64",
                       "--output", tmp_path / "b.yaml")
    assert code == 0, output
    spec = BlendSpec.load(tmp_path / "b.yaml")
    assert spec.weights == pytest.approx({"cc": 2 / 3, "hq": 1 / 3})


def test_source_needing_too_many_epochs_is_refused(tmp_path, datasets):
    hq = open_tokenized("hq", datasets["hq"])
    too_many = int(hq.tokens * 2.5 / 0.5)
    code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}",
                       "--weights", "cc=0.5,hq=0.5", "--tokens", too_many, "--seq-length", "64",
                       "--output", tmp_path / "b.yaml", "--max-epochs", "2")
    assert code == 1
    assert "source 'hq'" in output and re.search(r"megatron-core would read it 2\.5\d* times", output)
    assert "--max-epochs 2" in output
    # Allowed with a higher limit, and the epochs are recorded.
    code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}",
                       "--weights", "cc=0.5,hq=0.5", "--tokens", too_many, "--seq-length", "64",
                       "--output", tmp_path / "b.yaml", "--max-epochs", "3")
    assert code == 0, output
    assert BlendSpec.load(tmp_path / "b.yaml").sources[1].epochs == pytest.approx(2.5, rel=0.01)


def test_missing_or_incomplete_dataset_is_named(tmp_path, datasets):
    code, output = cli("blend", "--data", f"x={tmp_path / 'nothing'}", "--weights", "x=1",
                       "--tokens", "100", "--seq-length", "8", "--output", tmp_path / "b.yaml")
    assert code == 1 and "data 'x': no manifest" in output
    code, output = cli("blend", "--data", "no-equals-sign", "--weights", "x=1",
                       "--tokens", "100", "--seq-length", "8", "--output", tmp_path / "b.yaml")
    assert code == 2 and "Invalid value for '--data': expected NAME=PREFIX, got 'no-equals-sign'" in output


@pytest.mark.parametrize("weights", [{"cc": 0.67, "hq": 0.33}, {"cc": 0.5, "hq": 0.3, "qa": 0.2},
                                     {"cc": 0.9, "hq": 0.1}])
def test_realised_token_shares_match_within_half_a_percent(datasets, weights):
    members = [open_tokenized(n, datasets[n]) for n in weights]
    spec = make_blend("t", members, weights, tokens=50_000, seq_length=64)
    report = realised_shares(spec)
    assert report["samples"] == 50_000 // 64
    for row in report["sources"]:
        assert row["realised_share"] == pytest.approx(weights[row["name"]], abs=0.005)
    assert report["max_abs_error"] <= 0.005


def test_blend_check_cli_prints_and_emits_json(tmp_path, datasets):
    members = [open_tokenized(n, datasets[n]) for n in ("cc", "qa")]
    path = tmp_path / "b.yaml"
    make_blend("b", members, {"cc": 0.8, "qa": 0.2}, tokens=40_000, seq_length=64).save(path)
    code, output = cli("blend-check", path)
    assert code == 0 and "OK" in output and "qa" in output
    code, output = cli("blend-check", path, "--json")
    report = json.loads(output)
    assert report["ok"] is True and [r["name"] for r in report["sources"]] == ["cc", "qa"]


def test_tampered_blend_file_is_refused(tmp_path, datasets):
    path = tmp_path / "b.yaml"
    make_blend("b", [open_tokenized("cc", datasets["cc"]), open_tokenized("hq", datasets["hq"])],
               {"cc": 0.5, "hq": 0.5}, tokens=1000, seq_length=8).save(path)
    data = yaml.safe_load(path.read_text())
    data["sources"][0]["weight"] = 0.7
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="must sum to 1"):
        BlendSpec.load(path)
    data["sources"][0]["weight"] = 0.5
    data["data_path"][0] = 0.9
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="data_path does not match"):
        BlendSpec.load(path)


def test_grid_writes_the_papers_ratios(tmp_path, datasets):
    code, output = cli("grid", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}",
                       "--natural", "cc", "--synthetic", "hq",
                       "--tokens", "20K", "--seq-length", "64", "--output-dir", tmp_path / "grid")
    assert code == 0, output
    specs = {p.stem: BlendSpec.load(p) for p in (tmp_path / "grid").glob("*.yaml")}
    assert len(specs) == 12
    fractions = sorted(s.synthetic_fraction for s in specs.values())
    assert fractions == pytest.approx([0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.33, 0.5, 0.67, 1.0])
    assert specs["cc"].data_path == [1.0, str(datasets["cc"].resolve())]
    assert [s.name for s in specs["hq-100pct"].active_sources] == ["hq"]
    assert specs["hq-0p5pct"].weights == pytest.approx({"cc": 0.995, "hq": 0.005})


def test_grid_with_custom_ratios_and_two_synthetic_sources(datasets):
    natural = open_tokenized("cc", datasets["cc"])
    synth = [open_tokenized(n, datasets[n]) for n in ("hq", "qa")]
    blends = make_grid(natural, synth, tokens=10_000, seq_length=64, ratios_pct=(0, 33, 67))
    assert [b.name for b in blends] == ["cc", "hq-33pct", "hq-67pct", "qa-33pct", "qa-67pct"]
    with pytest.raises(ValueError, match=r"\[150.0\]"):
        make_grid(natural, synth, tokens=10_000, seq_length=64, ratios_pct=(0, 150.0))
    with pytest.raises(ValueError, match=r"in \[0, 100\], got \[100.5\]"):
        make_grid(natural, synth, tokens=10_000, seq_length=64, ratios_pct=(0, 100.5))
    assert make_grid(natural, synth[:1], tokens=10_000, seq_length=64, ratios_pct=(100,))[0].synthetic_fraction == 1


def test_grid_holds_every_blend_to_max_epochs_the_natural_one_too(datasets):
    """--max-epochs (default 1) bounds the 0% blend as every other: twice the natural tokens is refused
    by default and allowed, and recorded, with --max-epochs 3."""
    natural = open_tokenized("cc", datasets["cc"])
    synth = [open_tokenized("hq", datasets["hq"])]
    tokens = 2 * natural.tokens
    with pytest.raises(ValueError, match=r"source 'cc' .* more than --max-epochs 1\b"):
        make_grid(natural, synth, tokens=tokens, seq_length=64, ratios_pct=(0,))
    blends = make_grid(natural, synth, tokens=tokens, seq_length=64, ratios_pct=(0, 33), max_epochs=3)
    assert [b.max_epochs for b in blends] == [3, 3] and 1.9 < blends[0].sources[0].epochs < 2.1
    assert blends[1].sources[1].epochs > 1  # hq, a third of twice cc's tokens: read more than once, allowed


def test_the_grids_natural_source_is_natural_whatever_its_documents_say(tmp_path, datasets, hf_tokenizer_path):
    """A baseline corpus that a generator wrote (its documents name one) is still the natural side of
    the grid it is given as natural: the 0% blend has no synthetic share."""
    generated = _generated_corpus(tmp_path / "gen.jsonl", "hq", "some-model@0123456789ab", n=1500)
    tokenize(TokenizeConfig((str(generated),), str(tmp_path / "gen"), f"hf:{hf_tokenizer_path}", show_progress=False))
    natural = open_tokenized("gen", tmp_path / "gen")
    baseline, mixture = make_grid(natural, [open_tokenized("hq", datasets["hq"])], tokens=10_000, seq_length=64,
                                  ratios_pct=(0, 33), families={"hq": "rephrased"}, generators={"hq": "writer@0a1b"})
    assert baseline.sources[0].role == "natural" and baseline.synthetic_fraction == 0 and baseline.family is None
    assert [s.role for s in mixture.sources] == ["natural", "synthetic"] and mixture.synthetic_fraction == 0.33
    assert (mixture.family, mixture.generator) == ("rephrased", "writer@0a1b")  # the grid passes them on
    # `data_prep grid`'s split: --natural gen makes the generated corpus the natural side, not a synthetic one
    hq = open_tokenized("hq", datasets["hq"])
    cc_side, synthetic_side = split_roles([open_tokenized("cc", datasets["cc"]), natural])  # unmarked:
    assert cc_side.name == "cc" and [s.name for s in synthetic_side] == ["gen"]  # gen names a generator
    natural_side, synthetic_side = split_roles([natural, hq], synthetic={"hq"}, natural={"gen"})
    assert natural_side.name == "gen" and [s.name for s in synthetic_side] == ["hq"]


@pytest.mark.parametrize("flags, message", [
    # a flag naming no --data source is refused with the flag and the name, not ignored
    (("--natural", "cc", "--synthetic", "hq", "--synthetic", "hx"), "--synthetic: no --data for 'hx' (data given: ['cc', 'hq'])"),
    (("--natural", "cx", "--synthetic", "hq"), "--natural: no --data for 'cx' (data given: ['cc', 'hq'])"),
    (("--synthetic", "hq", "--generator", "hx=writer"), "--generator: no --data for 'hx' (data given: ['cc', 'hq'])"),
    # roles that do not make a grid: both sources natural (no marks, no generator in their documents)
    ((), "grid: needs exactly one natural source, got ['cc', 'hq'] (mark sources with --natural NAME / "
         "--synthetic NAME; without a mark, a source is synthetic when its documents name a generator)"),
    (("--natural", "cc", "--natural", "hq"), "grid: needs exactly one natural source, got ['cc', 'hq']"),
])
def test_grid_refuses_roles_by_name(tmp_path, datasets, flags, message):
    code, output = cli("grid", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}", *flags,
                       "--tokens", "20K", "--seq-length", "64", "--output-dir", tmp_path / "grid")
    assert code == 1 and f"Error: {message}" in output, output
    assert not (tmp_path / "grid").exists()


def test_grid_of_natural_text_only_asks_for_a_synthetic_source(tmp_path, datasets):
    code, output = cli("grid", "--data", f"cc={datasets['cc']}", "--tokens", "20K", "--seq-length", "64",
                       "--output-dir", tmp_path / "grid")
    assert code == 1 and output.strip() == ("Error: grid: needs at least one synthetic source (data given: ['cc']); "
                                            "mark one with --synthetic NAME"), output


def test_mismatched_tokenizers_cannot_be_blended(tmp_path, datasets, ranks_path):
    docs = write_jsonl(tmp_path / "o.jsonl", make_docs(50))
    tokenize(TokenizeConfig((str(docs),), str(tmp_path / "other"), f"tiktoken:{ranks_path}", show_progress=False))
    members = [open_tokenized("cc", datasets["cc"]), open_tokenized("other", tmp_path / "other")]
    with pytest.raises(ValueError, match="a blend needs one tokenizer"):
        make_blend("x", members, {"cc": 0.5, "other": 0.5}, tokens=100, seq_length=8)


def test_parse_weights_accepts_repeated_options():
    assert parse_weights(["a=0.5", "b=0.25,c=0.25"]) == {"a": 0.5, "b": 0.25, "c": 0.25}


def _generated_corpus(path, recipe: str, generator: str, n: int = 400, seed: int = 5):
    """Documents shaped as `generation run` writes them: text plus recipe and generator fields."""
    docs = [{**d, "recipe": recipe, "generator": generator, "source_id": d["id"]} for d in make_docs(n, seed=seed)]
    return write_jsonl(path, docs)


def test_source_identity_comes_from_the_manifests(tmp_path, datasets, hf_tokenizer_path):
    """A corpus whose documents name a generator is synthetic, of its recipe's family, without flags."""
    generated = _generated_corpus(tmp_path / "gen.jsonl", "qa", "SmolLM2-135M-Instruct@0123456789ab")
    manifest = tokenize(TokenizeConfig((str(generated),), str(tmp_path / "gen"), f"hf:{hf_tokenizer_path}",
                                       show_progress=False))
    assert manifest["origin"] == {"recipe": {"qa": 400}, "generator": {"SmolLM2-135M-Instruct@0123456789ab": 400}}
    assert json.loads(open(str(datasets["cc"]) + ".manifest.json").read())["origin"] == {"recipe": {}, "generator": {}}
    out = tmp_path / "grid"
    # cc and gen without role flags: cc is natural, gen synthetic (its documents name a generator)
    code, output = cli("grid", "--data", f"cc={datasets['cc']}", "--data", f"gen={tmp_path / 'gen'}",
                       "--data", f"hq={datasets['hq']}", "--synthetic", "hq", "--family", "hq=hq",
                       "--generator", "hq=by-hand",
                       "--tokens", "20K", "--seq-length", "64", "--ratios", "0,33", "--output-dir", out)
    assert code == 0, output
    specs = {p.stem: BlendSpec.load(p) for p in out.glob("*.yaml")}
    assert (specs["gen-33pct"].family, specs["gen-33pct"].generator) == ("qa", "SmolLM2-135M-Instruct@0123456789ab")
    assert (specs["hq-33pct"].family, specs["hq-33pct"].generator) == ("hq", "by-hand")  # set by flags
    assert specs["cc"].family is None and specs["cc"].generator is None and specs["cc"].synthetic_fraction == 0
    assert "qa by SmolLM2-135M-Instruct@0123456789ab" in output
    # flags naming no source are refused by name
    code, output = cli("grid", "--data", f"cc={datasets['cc']}", "--data", f"hq={datasets['hq']}", "--synthetic", "hq",
                       "--family", "hx=hq", "--tokens", "20K", "--seq-length", "64", "--output-dir", tmp_path / "g2")
    assert code != 0 and "--family" in output and "hx" in output
    code, output = cli("blend", "--data", f"cc={datasets['cc']}", "--synthetic", "cc", "--natural", "cc",
                       "--weights", "cc=1", "--tokens", "1K", "--seq-length", "64", "--output", tmp_path / "x.yaml")
    assert code != 0 and "--synthetic and --natural both name 'cc'" in output


def test_identity_ignores_bytes_and_follows_meaning(tmp_path, datasets):
    members = [open_tokenized("cc", datasets["cc"]), open_tokenized("hq", datasets["hq"])]
    a = make_blend("a", members, {"cc": 0.67, "hq": 0.33}, tokens=60_000, seq_length=128, synthetic={"hq"})
    # the same mixture, written differently: another name, a looser max_epochs (so another
    # provenance config), another creation record
    b = make_blend("b", members, {"cc": 0.67, "hq": 0.33}, tokens=60_000, seq_length=128, synthetic={"hq"},
                   max_epochs=5.0)
    b = dataclasses.replace(b, provenance={**b.provenance, "created_at": "2000-01-01T00:00:00+00:00"})
    saved_a, saved_b = a.save(tmp_path / "a.yaml"), b.save(tmp_path / "b.yaml")
    assert (tmp_path / "a.yaml").read_bytes() != (tmp_path / "b.yaml").read_bytes()
    assert a.identity_sha256 == b.identity_sha256 == saved_a.identity_sha256 == saved_b.identity_sha256
    for changed in (make_blend("a", members, {"cc": 0.5, "hq": 0.5}, tokens=60_000, seq_length=128),
                    make_blend("a", members, {"cc": 0.67, "hq": 0.33}, tokens=50_000, seq_length=128),
                    make_blend("a", members, {"cc": 0.67, "hq": 0.33}, tokens=60_000, seq_length=64)):
        assert changed.identity_sha256 != a.identity_sha256


def test_version_1_blends_still_load(tmp_path, datasets):
    members = [open_tokenized("cc", datasets["cc"]), open_tokenized("hq", datasets["hq"])]
    spec = make_blend("old", members, {"cc": 0.67, "hq": 0.33}, tokens=60_000, seq_length=128, synthetic={"hq"})
    data = spec.to_dict()
    data["version"] = 1
    for key in ("family", "generator", "identity_sha256"):
        data.pop(key)
    for source in data["sources"]:
        synthetic = source.pop("role") == "synthetic"
        source.pop("family"), source.pop("generator")
        source["synthetic"] = synthetic
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    old = BlendSpec.load(path)
    assert old.synthetic_fraction == pytest.approx(0.33) and old.family == "hq" and old.generator is None
    assert old.identity_sha256 == spec.identity_sha256


def test_version_3_blends_read_their_identity_where_the_data_now_lies(tmp_path, hf_tokenizer_path):
    """A blend before version 4 has no data sha256s: each is read from the dataset's manifest, or, an
    older manifest lacking them, hashed from the files beside it. A dataset moved since keeps the identity
    it had where it was tokenized; a missing manifest is refused naming the file."""
    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(200, seed=4))
    first, moved = tmp_path / "first" / "nat", tmp_path / "moved" / "nat"
    tokenize(TokenizeConfig((str(docs),), str(first), f"hf:{hf_tokenizer_path}", show_progress=False))
    spec = make_blend("nat", [open_tokenized("nat", first)], {"nat": 1.0}, tokens=5_000, seq_length=64)
    moved.parent.mkdir()
    for suffix in (".bin", ".idx"):
        Path(f"{first}{suffix}").rename(f"{moved}{suffix}")
    manifest = json.loads(Path(f"{first}.manifest.json").read_text())
    del manifest["bin_sha256"], manifest["idx_sha256"]  # an older manifest: its prefix is where it was made
    Path(f"{moved}.manifest.json").write_text(json.dumps(manifest))
    Path(f"{first}.manifest.json").unlink()
    data = spec.to_dict()
    data["version"] = 3
    for key in ("identity_sha256", "data_path"):
        data.pop(key)
    data["sources"][0].update(prefix=str(moved), manifest=f"{moved}.manifest.json")
    data["sources"][0].pop("data_sha256")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert BlendSpec.load(path).identity_sha256 == spec.identity_sha256
    Path(f"{moved}.manifest.json").unlink()
    with pytest.raises(MissingInputError) as refused:
        BlendSpec.load(path).identity_sha256
    assert str(refused.value) == (f"{moved}.manifest.json: missing; a blend written before version 4 needs its "
                                  "datasets' manifests for its identity (or write the blend again)")


def test_tokenizing_twice_into_two_folders_gives_equal_run_ids(tmp_path, hf_tokenizer_path):
    """The identity hashed absolute prefixes and manifests (created_at, argv): moving or
    re-tokenizing byte-identical data changed every run id."""
    from recipes.recipe import get_recipe
    from recipes.run_spec import make_run_id
    from recipes.shapes import get_shape

    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(400, seed=3))
    ids = []
    for folder in ("first", "second"):
        prefix = tmp_path / folder / "nat"
        tokenize(TokenizeConfig((str(docs),), str(prefix), f"hf:{hf_tokenizer_path}", show_progress=False))
        spec = make_blend("nat", [open_tokenized("nat", prefix)], {"nat": 1.0}, tokens=5_000, seq_length=64)
        saved = spec.save(tmp_path / folder / "nat.yaml")
        ids.append((saved.identity_sha256, make_run_id(get_shape("tiny-xs"), 5_000, saved.identity_sha256,
                                                         get_recipe("cpu-tiny"), "cpu")))
    first, second = (tmp_path / d / "nat.manifest.json" for d in ("first", "second"))
    assert first.read_bytes() != second.read_bytes()  # other paths, other times
    assert ids[0] == ids[1]


@pytest.mark.parametrize("share", [0.999, 1.0])
def test_epochs_are_what_megatron_core_reads(tmp_path, datasets, share):
    """A source asked for exactly its tokens starts a second megatron epoch (the sample surplus and
    the extra token of each sample): it is refused at --max-epochs 1, and just under it is not."""
    from data_prep.megatron_blend import build_gpt_dataset

    hq = open_tokenized("hq", datasets["hq"])
    cc = open_tokenized("cc", datasets["cc"])
    tokens = int(hq.tokens / 0.5 * share)
    weights = {"cc": 0.5, "hq": 0.5}
    try:
        spec = make_blend("e", [cc, hq], weights, tokens=tokens, seq_length=64, max_epochs=1.0)
    except ValueError as refused:
        spec = make_blend("e", [cc, hq], weights, tokens=tokens, seq_length=64, max_epochs=2.0)
        assert spec.sources[1].epochs > 1.0 and "megatron-core would read it 1.0" in str(refused)
    hq_dataset = build_gpt_dataset(spec, tokens // 64, cache_dir=tmp_path / "cache").datasets[1]
    built_epochs = len(hq_dataset.document_index) // len(hq_dataset.indices)
    assert built_epochs == math.ceil(spec.sources[1].epochs)  # what megatron-core built: 1, or 2
    assert (built_epochs == 1) == (spec.sources[1].epochs <= 1.0)


def test_parse_weights_takes_a_zero_weight_and_names_its_option_and_form():
    """A zero weight is a weight (the grid's 0% synthetic); a malformed item or none at all is
    refused naming --weights and the NAME=W form."""
    from synthscale.errors import SynthscaleError

    assert parse_weights(["cc=1,hq=0"]) == {"cc": 1.0, "hq": 0.0}
    with pytest.raises(SynthscaleError, match=r"^--weights: expected NAME=W, got 'cc0\.5'$"):
        parse_weights(["cc0.5"])
    with pytest.raises(SynthscaleError, match=r"^--weights: give at least one NAME=W$"):
        parse_weights([" , "])


def test_a_datasets_data_identity_is_the_hash_of_its_bin_and_idx_sha256s(tmp_path):
    """From the manifest's bin/idx sha256s (the files need not be there), else, for an older manifest,
    hashed from the files at the prefix given (or, without one, the manifest's own prefix)."""
    import hashlib

    from data_prep.blend_spec import dataset_data_sha256

    def pair_hash(bin_sha, idx_sha):
        return hashlib.sha256(json.dumps([bin_sha, idx_sha]).encode()).hexdigest()

    listed = {"bin_sha256": "1" * 64, "idx_sha256": "2" * 64, "prefix": str(tmp_path / "gone")}
    assert dataset_data_sha256(listed) == pair_hash("1" * 64, "2" * 64)
    (tmp_path / "d.bin").write_bytes(b"tokens")
    (tmp_path / "d.idx").write_bytes(b"index")
    from_files = pair_hash(hashlib.sha256(b"tokens").hexdigest(), hashlib.sha256(b"index").hexdigest())
    assert dataset_data_sha256({"prefix": str(tmp_path / "d")}) == from_files
    assert dataset_data_sha256({"prefix": "/moved/away", "bin_sha256": "1" * 64}, str(tmp_path / "d")) == from_files
