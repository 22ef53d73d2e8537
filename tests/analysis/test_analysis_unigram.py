"""Unigram diagnostics on small .bin/.idx files written with megatron-core's builder."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.cli import main
from analysis.data.unigram import UnigramError, kl_divergence, token_id_counts, unigram_diagnostics, zipf_fit
from synthscale.errors import SynthscaleError

EOD = 9
TEST_DOCS = [[1, 2, 3, EOD], [1, 1, 2, EOD]]
TRAIN_A = [[1, 1, 1, 2, EOD], [2, 4, EOD]]
TRAIN_B = [[5, 5, 5, EOD], [1, EOD]]


@pytest.fixture
def token_sets(tmp_path, write_tokens):
    return {
        "test": str(write_tokens(tmp_path / "test", TEST_DOCS, eod_id=EOD, vocab_size=10)),
        "a": str(write_tokens(tmp_path / "a", TRAIN_A, eod_id=EOD, vocab_size=10)),
        "b": str(write_tokens(tmp_path / "b", TRAIN_B, eod_id=EOD, vocab_size=10)),
    }


def test_counts_streamed_in_blocks_equal_the_whole(token_sets):
    whole = token_id_counts(token_sets["test"])
    one_doc_at_a_time = token_id_counts(token_sets["test"], chunk_tokens=1)
    assert whole.documents == 2
    assert whole.counts.tolist() == [0, 3, 2, 1, 0, 0, 0, 0, 0, 2]
    assert np.array_equal(whole.counts, one_doc_at_a_time.counts)
    no_eod = token_id_counts(token_sets["test"], exclude_ids=(EOD,))
    assert no_eod.tokens == 6 and no_eod.excluded == {EOD: 2}


def test_statistics_by_hand(token_sets):
    result = unigram_diagnostics({"a": token_sets["a"], "b": token_sets["b"]}, token_sets["test"], min_test_count=1)
    assert result.vocab_size == 10 and result.test.excluded == {EOD: 2}
    a, b = result.per_train["a"], result.per_train["b"]
    # test: 1 x3, 2 x2, 3 x1; a: 1 x3, 2 x2, 4 x1; b: 5 x3, 1 x1 (end-of-document left out)
    assert a["token_coverage"] == pytest.approx(5 / 6) and a["type_coverage"] == pytest.approx(2 / 3)
    assert b["token_coverage"] == pytest.approx(3 / 6) and b["type_coverage"] == pytest.approx(1 / 3)
    assert a["test_types_unseen_in_train"] == 1 and b["test_types_unseen_in_train"] == 2
    # q = (count + 1) / (6 + 10) for a
    kl_a = 0.5 * math.log(0.5 / (4 / 16)) + (1 / 3) * math.log((1 / 3) / (3 / 16)) + (1 / 6) * math.log((1 / 6) / (1 / 16))
    assert a["kl_test_train_nats"] == pytest.approx(kl_a, rel=1e-12)
    # q = (count + 1) / (4 + 10) for b
    kl_b = 0.5 * math.log(0.5 / (2 / 14)) + (1 / 3) * math.log((1 / 3) / (1 / 14)) + (1 / 6) * math.log((1 / 6) / (1 / 14))
    assert b["kl_test_train_nats"] == pytest.approx(kl_b, rel=1e-12)
    # ratios p / q in a: token 3 (1/6)/(1/16) = 2.67, token 1 0.5/0.25 = 2, token 2 (1/3)/(3/16) = 1.78
    ranked = a["frequent_in_test_rare_in_train"]
    assert [t["token_id"] for t in ranked] == [3, 1, 2]
    assert ranked[0]["ratio"] == pytest.approx(8 / 3) and ranked[0]["train_count"] == 0
    # Zipf of test: frequencies 3/6, 2/6, 1/6 at ranks 1, 2, 3; least squares slope by hand
    x = np.log10([1, 2, 3])
    y = np.log10([3 / 6, 2 / 6, 1 / 6])
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    assert result.zipf["test"]["exponent"] == pytest.approx(-slope, rel=1e-12)
    assert result.zipf["test"]["ranks_used"] == 3
    data = result.to_dict()
    assert data["smoothing"]["alpha"] == 1.0 and data["smoothing"]["over_types"] == 10
    json.dumps(data)


def test_smoothing_is_stated_and_must_be_positive():
    with pytest.raises(UnigramError, match="smoothing"):
        kl_divergence(np.array([1, 0]), np.array([0, 1]), smoothing=0)
    assert kl_divergence(np.array([2, 2]), np.array([5, 5]), smoothing=1.0) == pytest.approx(0.0)
    assert zipf_fit(np.array([3, 1]))["exponent"] is None


def test_without_a_manifest_nothing_is_left_out(tmp_path, write_tokens):
    test = write_tokens(tmp_path / "t", [[0, 1, 1]])
    train = write_tokens(tmp_path / "r", [[1, 2]])
    result = unigram_diagnostics({"r": str(train)}, str(test))
    assert result.vocab_size == 3 and result.test.excluded == {}
    assert result.per_train["r"]["token_coverage"] == pytest.approx(2 / 3)


def test_missing_prefix_is_named(tmp_path):
    with pytest.raises(SynthscaleError, match="unigram set: no Megatron dataset at prefix"):
        token_id_counts(tmp_path / "nothing")


def test_cli_text_json_and_json_file(token_sets, tmp_path):
    out = tmp_path / "u.json"
    args = ["unigram", "--train", f"a={token_sets['a']}", "--train", f"b={token_sets['b']}", "--test", token_sets["test"],
            "--min-test-count", "1"]
    result = CliRunner().invoke(main, [*args, "--json-file", str(out)])
    assert result.exit_code == 0, result.output
    assert "a: token coverage 0.8333, type coverage 0.6667" in result.stdout
    assert json.loads(out.read_text())["per_train"]["b"]["token_coverage"] == 0.5
    printed = CliRunner().invoke(main, [*args, "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == json.loads(out.read_text())  # stdout holds the JSON and nothing else


def test_cli_errors(token_sets, tmp_path):
    bad = CliRunner().invoke(main, ["unigram", "--train", "a", "--test", token_sets["test"]])
    assert bad.exit_code == 2 and "Invalid value for '--train': expected NAME=PREFIX, got 'a'" in bad.output
    twice = CliRunner().invoke(main, ["unigram", "--train", f"a={token_sets['a']}", "--train", f"a={token_sets['b']}",
                                      "--test", token_sets["test"]])
    assert twice.exit_code == 2 and "'a' is given twice" in twice.output
    missing = CliRunner().invoke(main, ["unigram", "--train", f"a={token_sets['a']}", "--test", str(tmp_path / "none")])
    assert missing.exit_code == 1 and missing.output.count("\n") == 1 and str(tmp_path / "none") in missing.output
