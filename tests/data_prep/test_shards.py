"""Sharded sources in blends: globs and prefix lists, weights split by tokens, accounting as a whole."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from click.testing import CliRunner

from data_prep.blend import make_blend, make_grid
from data_prep.blend_spec import BlendSource, BlendSpec
from data_prep.cli import main
from data_prep.megatron_blend import realised_shares
from data_prep.sources import open_source
from data_prep.tokenize import TokenizeConfig, tokenize
from synthscale.files import sha256_file
from tests.data_prep.conftest import make_docs, write_jsonl

# documents per shard: shards of different sizes, so splitting weights by tokens matters
CC_SHARDS = (300, 1400, 500, 800, 200, 600, 400, 900, 250, 650, 350, 1000)
HQ_SHARDS = {"a": ("hq", "gen-a@000000000001", 700), "b": ("hq", "gen-b@000000000002", 300)}


def tok(inputs, prefix, spec):
    return tokenize(TokenizeConfig(tuple(str(i) for i in inputs), str(prefix), spec, show_progress=False))


@pytest.fixture(scope="module")
def shards(tmp_path_factory, hf_tokenizer_path):
    """cc: 12 shards (a glob); hq: 2 generated shards (a list file); nat: one prefix."""
    root = tmp_path_factory.mktemp("shards")
    spec = f"hf:{hf_tokenizer_path}"
    for i, n in enumerate(CC_SHARDS):  # shard-2 .. shard-10: natural order differs from sorted order
        tok([write_jsonl(root / f"cc-{i}.jsonl", make_docs(n, seed=100 + i))], root / "cc" / f"shard-{i}", spec)
    for key, (recipe, generator, n) in HQ_SHARDS.items():
        docs = [{**d, "recipe": recipe, "generator": generator} for d in make_docs(n, seed=ord(key))]
        tok([write_jsonl(root / f"hq-{key}.jsonl", docs)], root / "hq" / f"part-{key}", spec)
    (root / "hq.txt").write_text("# the hq shards\nhq/part-a\n\nhq/part-b  # second\n")
    tok([write_jsonl(root / "nat.jsonl", make_docs(3000, seed=7))], root / "nat", spec)
    return root.resolve()


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def manifest(prefix) -> dict:
    return json.loads(open(f"{prefix}.manifest.json").read())


def test_a_glob_is_one_source_whose_weight_is_split_by_shard_tokens(tmp_path, shards):
    out = tmp_path / "b.yaml"
    code, output = cli("blend", "--data", f"cc={shards / 'cc' / 'shard-*'}", "--data", f"hq={shards / 'hq.txt'}",
                       "--data", f"nat={shards / 'nat'}", "--weights", "cc=0.5,hq=0.2,nat=0.3",
                       "--tokens", "100K", "--seq-length", "64", "--output", out)
    assert code == 0, output
    assert "12 shards" in output and "2 shards" in output
    data = yaml.safe_load(out.read_text())
    cc, hq, nat = data["sources"]
    # natural order: shard-2 before shard-10
    assert [s["prefix"] for s in cc["shards"]] == [str(shards / "cc" / f"shard-{i}") for i in range(12)]
    tokens = [manifest(shards / "cc" / f"shard-{i}")["tokens"] for i in range(12)]
    assert [s["tokens"] for s in cc["shards"]] == tokens and cc["tokens_available"] == sum(tokens)
    assert [s["manifest_sha256"] for s in cc["shards"]] == [
        sha256_file(shards / "cc" / f"shard-{i}.manifest.json") for i in range(12)]
    assert cc["prefix"] == str(shards / "cc" / "shard-*") and cc["manifest"] is None
    # epochs: its most-read shard's, as megatron-core reads it (rounded up per shard, 0.5% surplus)
    assert cc["tokens_requested"] == 50_000 and 50_000 / sum(tokens) < cc["epochs"] < 1.1 * 50_000 / sum(tokens)
    assert [s["prefix"] for s in hq["shards"]] == [str(shards / "hq" / "part-a"), str(shards / "hq" / "part-b")]
    assert "shards" not in nat and nat["prefix"] == str(shards / "nat")
    # data_path lists every shard, the source's weight split in proportion to tokens
    data_path = data["data_path"]
    assert len(data_path) == 2 * (12 + 2 + 1)
    cc_weights = data_path[0:24:2]
    assert cc_weights == pytest.approx([0.5 * t / sum(tokens) for t in tokens])
    assert data_path[1:24:2] == [str(shards / "cc" / f"shard-{i}") for i in range(12)]
    from megatron.core.datasets.utils import get_blend_from_list

    prefixes, weights = get_blend_from_list([str(x) for x in data_path])
    assert len(prefixes) == 15 and sum(weights) == pytest.approx(1.0)
    # realised by megatron-core within 0.5% per source
    code, output = cli("blend-check", out, "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["ok"] and [r["name"] for r in report["sources"]] == ["cc", "hq", "nat"]
    assert [r["shards"] for r in report["sources"]] == [12, 2, None]
    for row, want in zip(report["sources"], (0.5, 0.2, 0.3)):
        assert row["realised_share"] == pytest.approx(want, abs=0.005)
    # each shard is drawn in proportion to its tokens: no shard is read more often than its source
    import numpy as np

    from data_prep.megatron_blend import build_gpt_dataset

    spec = BlendSpec.load(out)
    samples = report["samples"]
    per_prefix = np.bincount(np.asarray(build_gpt_dataset(spec, samples).dataset_index)[:samples], minlength=15)
    assert (per_prefix[:12] / samples) == pytest.approx(cc_weights, abs=0.002)


@pytest.mark.parametrize("weights", [{"cc": 0.9, "hq": 0.1}, {"cc": 0.33, "hq": 0.67}, {"cc": 1.0}])
def test_sharded_sources_are_realised_by_megatron_within_half_a_percent(shards, weights):
    members = [open_source("cc", str(shards / "cc" / "shard-*")), open_source("hq", str(shards / "hq.txt"))]
    members = [m for m in members if m.name in weights]
    spec = make_blend("t", members, weights, tokens=40_000, seq_length=64)
    report = realised_shares(spec)
    for row in report["sources"]:
        assert row["realised_share"] == pytest.approx(weights[row["name"]], abs=0.005)
    assert sum(r["samples"] for r in report["sources"]) == 40_000 // 64


def test_accounting_and_refusal_are_for_the_source_as_a_whole(tmp_path, shards):
    cc = open_source("cc", str(shards / "cc" / "shard-*"))
    largest = max(s.tokens for s in cc.shards)
    # more than any one shard holds, less than the source: accepted, and under one epoch
    spec = make_blend("x", [cc], {"cc": 1.0}, tokens=3 * largest, seq_length=64)
    (source,) = spec.sources
    assert source.tokens_available == cc.tokens and source.epochs == pytest.approx(3 * largest / cc.tokens, rel=0.05)
    code, output = cli("blend", "--data", f"cc={shards / 'cc' / 'shard-*'}", "--weights", "cc=1",
                       "--tokens", 2 * cc.tokens, "--seq-length", "64", "--output", tmp_path / "b.yaml")
    assert code == 1 and f"source 'cc' has {cc.tokens:,} tokens" in output and "would read it 2.0" in output
    assert not (tmp_path / "b.yaml").exists()


def test_identity_of_a_sharded_source_comes_from_its_shards_manifests(shards):
    cc, hq = open_source("cc", str(shards / "cc" / "shard-*")), open_source("hq", str(shards / "hq.txt"))
    spec = make_blend("m", [cc, hq], {"cc": 0.7, "hq": 0.3}, tokens=20_000, seq_length=64)
    source = spec.sources[0]
    want = hashlib.sha256(json.dumps([sha256_file(s.manifest_path) for s in cc.shards]).encode()).hexdigest()
    assert source.manifest_sha256 == want
    data = [hashlib.sha256(json.dumps([s.manifest["bin_sha256"], s.manifest["idx_sha256"]]).encode()).hexdigest()
            for s in cc.shards]
    assert source.data_sha256 == hashlib.sha256(json.dumps(data).encode()).hexdigest()
    assert spec.identity["sources"] == [[0.7, source.data_sha256], [0.3, spec.sources[1].data_sha256]]
    # the same shards listed in a file: the same data_path, so the same identity
    (shards / "cc.txt").write_text("\n".join(s.prefix for s in cc.shards) + "\n")
    listed = make_blend("m2", [open_source("cc", str(shards / "cc.txt")), hq], {"cc": 0.7, "hq": 0.3},
                        tokens=20_000, seq_length=64)
    assert listed.sources[0].prefix != source.prefix and listed.identity_sha256 == spec.identity_sha256
    # fewer shards: another identity
    (shards / "cc-less.txt").write_text("\n".join(s.prefix for s in cc.shards[:-1]) + "\n")
    fewer = make_blend("m3", [open_source("cc", str(shards / "cc-less.txt")), hq], {"cc": 0.7, "hq": 0.3},
                       tokens=20_000, seq_length=64)
    assert fewer.identity_sha256 != spec.identity_sha256


def test_shard_origins_are_combined_and_flags_apply_per_source(tmp_path, shards):
    hq = open_source("hq", str(shards / "hq.txt"))
    assert hq.origin_counts("generator") == {"gen-a@000000000001": 700, "gen-b@000000000002": 300}
    assert hq.origin_counts("recipe") == {"hq": 1000}
    cc = open_source("cc", str(shards / "cc" / "shard-*"))
    spec = make_blend("i", [cc, hq], {"cc": 0.67, "hq": 0.33}, tokens=20_000, seq_length=64)
    assert [(s.role, s.family, s.generator) for s in spec.sources] == [
        ("natural", "natural", None), ("synthetic", "hq", "gen-a@000000000001+gen-b@000000000002")]
    code, output = cli("blend", "--data", f"cc={shards / 'cc' / 'shard-*'}", "--data", f"hq={shards / 'hq.txt'}",
                       "--synthetic", "cc", "--family", "cc=rewritten", "--generator", "cc=by-hand",
                       "--natural", "hq", "--weights", "cc=0.5,hq=0.5", "--tokens", "10K", "--seq-length", "64",
                       "--output", tmp_path / "f.yaml")
    assert code == 0, output
    cc_src, hq_src = BlendSpec.load(tmp_path / "f.yaml").sources
    assert (cc_src.role, cc_src.family, cc_src.generator) == ("synthetic", "rewritten", "by-hand")
    assert (hq_src.role, hq_src.family) == ("natural", "natural")


def test_grid_takes_sharded_sources(tmp_path, shards):
    # no role flags: hq's documents name their generators, so it is the synthetic source
    code, output = cli("grid", "--data", f"cc={shards / 'cc' / 'shard-*'}", "--data", f"hq={shards / 'hq.txt'}",
                       "--tokens", "20K", "--seq-length", "64", "--ratios", "0,33,100", "--output-dir", tmp_path / "g")
    assert code == 0, output
    specs = {p.stem: BlendSpec.load(p) for p in (tmp_path / "g").glob("*.yaml")}
    assert sorted(specs) == ["cc", "hq-100pct", "hq-33pct"]
    assert len(specs["cc"].data_path) == 24 and len(specs["hq-33pct"].data_path) == 28
    assert specs["hq-33pct"].synthetic_fraction == pytest.approx(0.33)
    assert realised_shares(specs["hq-33pct"])["max_abs_error"] <= 0.005
    blends = make_grid(open_source("cc", str(shards / "nat")), [open_source("hq", str(shards / "hq.txt"))],
                       tokens=10_000, seq_length=64, ratios_pct=(50,))
    assert [len(s.prefixes) for s in blends[0].sources] == [1, 2]


def test_shards_of_another_tokenizer_are_named(tmp_path, shards, hf_tokenizer_path, ranks_path):
    tok([write_jsonl(tmp_path / "a.jsonl", make_docs(40))], tmp_path / "mixed" / "s-1", f"hf:{hf_tokenizer_path}")
    tok([write_jsonl(tmp_path / "b.jsonl", make_docs(40, seed=1))], tmp_path / "mixed" / "s-2", f"tiktoken:{ranks_path}")
    with pytest.raises(ValueError) as err:
        open_source("mx", str(tmp_path / "mixed" / "s-*"))
    message = str(err.value)
    assert message.startswith("data 'mx': shard ") and str(tmp_path / "mixed" / "s-2") in message
    assert f"tiktoken:{ranks_path}" in message and "a source's shards need one tokenizer" in message
    # across sources, the existing check still applies
    with pytest.raises(ValueError, match="a blend needs one tokenizer"):
        make_blend("x", [open_source("cc", str(shards / "cc" / "shard-*")),
                         open_source("o", str(tmp_path / "mixed" / "s-2"))], {"cc": 0.5, "o": 0.5},
                   tokens=100, seq_length=8)


def test_bad_shard_specs_are_named(tmp_path, shards, hf_tokenizer_path):
    def refused(value):
        code, output = cli("blend", "--data", f"x={value}", "--weights", "x=1", "--tokens", "100",
                           "--seq-length", "8", "--output", tmp_path / "b.yaml")
        assert code == 1, output
        return output

    assert f"no tokenized dataset matches {str(tmp_path / 'none-*')!r}" in refused(tmp_path / "none-*")
    # a shard whose tokenize did not finish (.bin/.idx, no manifest) is named, not skipped
    tok([write_jsonl(tmp_path / "c.jsonl", make_docs(30))], tmp_path / "part" / "s-0", f"hf:{hf_tokenizer_path}")
    for suffix in (".bin", ".idx"):
        (tmp_path / "part" / f"s-1{suffix}").write_bytes((tmp_path / "part" / f"s-0{suffix}").read_bytes())
    output = refused(tmp_path / "part" / "s-*")
    assert "shard" in output and "s-1.manifest.json" in output and "no manifest" in output
    listing = tmp_path / "list.txt"
    listing.write_text(f"{shards / 'nat'}\n{shards / 'hq' / 'part-a'}\n{shards / 'nat'}\n")
    assert f"shard {str(shards / 'nat')!r} is listed twice" in refused(listing)
    listing.write_text("# nothing\n\n")
    assert f"{str(listing)!r} lists no prefixes" in refused(listing)
    listing.write_text("missing-shard\n")
    assert str(tmp_path / "missing-shard.manifest.json") in refused(listing)
    assert "is a folder" in refused(shards / "cc") and "shard-*" not in refused(shards / "cc")


def test_spec_format_old_versions_and_tampering(tmp_path, shards):
    spec = make_blend("v", [open_source("cc", str(shards / "cc" / "shard-*")), open_source("nat", str(shards / "nat"))],
                      {"cc": 0.5, "nat": 0.5}, tokens=20_000, seq_length=64)
    path = tmp_path / "v.yaml"
    saved = spec.save(path)
    assert saved == spec and saved.identity_sha256 == spec.identity_sha256
    data = yaml.safe_load(path.read_text())
    assert data["version"] == 4

    def write(d):
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path

    tampered = json.loads(json.dumps(data))
    tampered["sources"][0]["shards"][0]["tokens"] += 1
    with pytest.raises(ValueError, match=r"sources\[cc\].shards: shards hold"):
        BlendSpec.load(write(tampered))
    tampered = json.loads(json.dumps(data))
    tampered["sources"][0]["shards"][0]["manifest_sha256"] = "0" * 64
    with pytest.raises(ValueError, match=r"sources\[cc\].manifest_sha256"):
        BlendSpec.load(write(tampered))
    tampered = json.loads(json.dumps(data))
    tampered["sources"][0]["shards"][1]["prefix"] = tampered["sources"][0]["shards"][0]["prefix"]
    with pytest.raises(ValueError, match="listed twice"):
        BlendSpec.load(write(tampered))
    future = dict(data, version=5)
    with pytest.raises(ValueError, match="version 5 is not supported"):
        BlendSpec.load(write(future))


def test_old_blend_versions_load_with_the_identity_of_their_data(tmp_path, shards):
    """Blends written before version 4 record no data sha256: it is read from their manifests.
    (Their identity is the new one: run ids planned from them before version 4 differ.)"""
    nat, cc = open_source("nat", str(shards / "nat")), open_source("cc", str(shards / "cc" / "shard-*"))
    spec = make_blend("u", [nat, cc], {"nat": 0.67, "cc": 0.33}, tokens=20_000, seq_length=64)
    data = spec.to_dict()
    old = json.loads(json.dumps(data))
    for source in old["sources"]:
        source.pop("data_sha256")
        for shard in source.get("shards") or ():
            shard.pop("data_sha256")
    for version in (2, 3):
        path = tmp_path / f"v{version}.yaml"
        path.write_text(yaml.safe_dump(dict(old, version=version), sort_keys=False))
        assert BlendSpec.load(path).identity_sha256 == spec.identity_sha256 == data["identity_sha256"]
    # the formula, from the file's own fields: weights, data sha256s, tokenizer, tokens, seq_length
    formula = {"sources": [[s["weight"], s["data_sha256"]] for s in data["sources"]],
               "tokenizer": {k: data["tokenizer"][k] for k in ("sha256", "vocab_size", "eod_id")},
               "tokens": 20_000, "seq_length": 64}
    assert spec.identity_sha256 == hashlib.sha256(json.dumps(formula, sort_keys=True).encode()).hexdigest()
    tampered = json.loads(json.dumps(data))
    tampered["sources"][1]["shards"][0]["data_sha256"] = "0" * 64
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tampered, sort_keys=False))
    with pytest.raises(ValueError, match=r"sources\[cc\].data_sha256"):
        BlendSpec.load(tmp_path / "t.yaml")
    future = dict(data, version=5)
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(future, sort_keys=False))
    with pytest.raises(ValueError, match="version 5 is not supported"):
        BlendSpec.load(tmp_path / "f.yaml")


def test_more_datasets_than_megatron_takes_are_refused_with_the_count(shards):
    """megatron-core's BlendedDataset asserts len(datasets) < 32767."""
    from data_prep.blend_spec import MAX_DATASETS, Shard

    shard_list = tuple(Shard(f"/data/s-{i}", 10, "0" * 64) for i in range(MAX_DATASETS + 1))
    source = BlendSource(name="many", prefix="/data/s-*", manifest=None,
                         manifest_sha256=hashlib.sha256(json.dumps(["0" * 64] * len(shard_list)).encode()).hexdigest(),
                         role="natural", family="natural", generator=None, weight=1.0, tokens_requested=10,
                         tokens_available=10 * len(shard_list), epochs=0.1, shards=shard_list)
    with pytest.raises(ValueError, match="reads 32,767 datasets .* at most 32,766"):
        BlendSpec(name="many", tokens=10, seq_length=8, max_epochs=1.0,
                  tokenizer={"spec": "x", "vocab_size": 10, "eod_id": 0, "sha256": "0" * 64}, sources=(source,))


def _sharded_source(shard_list, **fields):
    """A sharded BlendSource built directly (as a caller of the dataclass does), its identity computed here."""
    sha = [s["manifest_sha256"] if isinstance(s, dict) else s.manifest_sha256 for s in shard_list]
    tokens = [s["tokens"] if isinstance(s, dict) else s.tokens for s in shard_list]
    return BlendSource(**{"name": "web", "prefix": "/data/web-*", "manifest": None,
                          "manifest_sha256": hashlib.sha256(json.dumps(sha).encode()).hexdigest(),
                          "role": "natural", "family": "natural", "generator": None, "weight": 0.6,
                          "tokens_requested": 10, "tokens_available": sum(tokens), "epochs": 0.1,
                          "shards": shard_list, **fields})


def test_shards_given_as_mappings_become_shards_and_split_the_weight():
    """A source built with its shards as plain mappings (as YAML gives them) holds `Shard`s, in a
    tuple, and megatron-core's weights split the source's weight by the shards' tokens."""
    from data_prep.blend_spec import Shard

    given = [{"prefix": "/data/web-0", "tokens": 30, "manifest_sha256": "a" * 64},
             {"prefix": "/data/web-1", "tokens": 10, "manifest_sha256": "b" * 64}]
    source = _sharded_source(given)
    assert source.shards == (Shard("/data/web-0", 30, "a" * 64), Shard("/data/web-1", 10, "b" * 64))
    assert source.prefixes == ("/data/web-0", "/data/web-1")
    assert source.megatron_weights == [(pytest.approx(0.6 * 30 / 40), "/data/web-0"),
                                       (pytest.approx(0.6 * 10 / 40), "/data/web-1")]


def test_bad_shard_lists_are_named_in_the_blend_source():
    """No shard, a prefix listed twice (that one named, not another), a shard with no tokens (named)
    are refused; a shard of a single token is a shard."""
    from data_prep.blend_spec import Shard
    from synthscale.errors import SynthscaleError

    with pytest.raises(SynthscaleError, match=r"^sources\[web\]\.shards: a sharded source needs at least one shard$"):
        _sharded_source((), tokens_available=1)
    twice = (Shard("/d/b", 5, "1" * 64), Shard("/d/a", 5, "2" * 64), Shard("/d/b", 5, "3" * 64))
    with pytest.raises(SynthscaleError, match=r"^sources\[web\]\.shards: '/d/b' is listed twice$"):
        _sharded_source(twice)
    empty = (Shard("/d/a", 5, "1" * 64), Shard("/d/z", 0, "2" * 64))
    with pytest.raises(SynthscaleError, match=r"^sources\[web\]\.shards: shard '/d/z' has no tokens$"):
        _sharded_source(empty)
    one_token = _sharded_source((Shard("/d/a", 1, "1" * 64), Shard("/d/b", 4, "2" * 64)))
    assert one_token.tokens_available == 5 and one_token.prefixes == ("/d/a", "/d/b")
