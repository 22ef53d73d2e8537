"""Reading a concept graph written by `generation concept-graph` (generation/synthllm/graph_build.py) into
compact arrays for sampling: shared-concept adjacency (CSR, both directions), each document's
concepts and their mention offsets, each concept's documents (CSR, sorted), and the documents'
texts by offset in texts.bin (memory-mapped: a reference is read when it is quoted, not before).

Memory: the graph's kept edges twice (int32 + int64 weight), every concept mention twice (int32),
the concept strings, and the documents' ids; never their texts.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np

from generation.synthllm.graph_build import GRAPH_FILES, GRAPH_KIND, GRAPH_VERSION, ConceptGraphError


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int, weights: np.ndarray | None = None):
    """(indptr, cols sorted by row then col, weights in the same order)."""
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order], (weights[order] if weights is not None else None)


class ConceptGraph:
    """A loaded graph: `ConceptGraph.load(DIR)`."""

    def __init__(self, root: Path, manifest: dict):
        import pyarrow.parquet as pq

        self.root = root
        self.manifest = manifest
        self.sha256: str = manifest["graph_sha256"]
        if manifest.get("version") != GRAPH_VERSION:
            raise ConceptGraphError(f"{root / 'graph.json'}: graph version {manifest.get('version')!r}, this synthscale "
                                    f"reads version {GRAPH_VERSION}: rebuild it with `generation concept-graph` "
                                    "(no model call: it reads the concept outputs)")
        nodes = pq.read_table(root / "nodes.parquet", columns=["concept_id", "concept", "documents", "kept", "shared"])
        if not np.array_equal(nodes.column("concept_id").to_numpy(), np.arange(nodes.num_rows)):
            raise ConceptGraphError(f"{root / 'nodes.parquet'}: concept ids are not 0..n-1 in order")
        self.names: list[str] = nodes.column("concept").to_pylist()
        self.concept_docs_count = nodes.column("documents").to_numpy()
        self.kept = nodes.column("kept").to_numpy(zero_copy_only=False).astype(bool)
        self.shared = nodes.column("shared").to_numpy(zero_copy_only=False).astype(bool)
        n = len(self.names)
        edges = pq.read_table(root / "edges.parquet")
        a = edges.column("source").to_numpy().astype(np.int64)
        b = edges.column("target").to_numpy().astype(np.int64)
        w = edges.column("weight").to_numpy().astype(np.int64)
        self.n_edges = len(a)
        self.adj_ptr, self.adj, self.adj_w = _csr(np.concatenate((a, b)), np.concatenate((b, a)).astype(np.int32), n,
                                                  np.concatenate((w, w)))
        docs = pq.read_table(root / "documents.parquet",
                             columns=["id", "source_id", "chunk", "concept_ids", "concept_offsets", "text_offset",
                                      "text_bytes"])
        self.n_docs = docs.num_rows
        self.doc_ids: list[str] = docs.column("id").to_pylist()
        self.doc_source_ids: list[str] = docs.column("source_id").to_pylist()
        self.doc_chunks = docs.column("chunk").to_numpy()
        lists = docs.column("concept_ids").combine_chunks()
        self.doc_ptr = lists.offsets.to_numpy().astype(np.int64)
        self.doc_concepts = lists.values.to_numpy().astype(np.int32)
        self.doc_offsets = docs.column("concept_offsets").combine_chunks().values.to_numpy().astype(np.int64)
        self.text_offset = docs.column("text_offset").to_numpy()
        self.text_bytes = docs.column("text_bytes").to_numpy()
        owners = np.repeat(np.arange(self.n_docs, dtype=np.int32), np.diff(self.doc_ptr))
        self.cdoc_ptr, self.cdocs, _ = _csr(self.doc_concepts.astype(np.int64), owners, n)
        # walk starts: kept concepts shared by min_docs documents or more, weighted by their documents
        self.starts = np.flatnonzero(self.kept & self.shared).astype(np.int32)
        self.start_cum = np.cumsum(self.concept_docs_count[self.starts].astype(np.float64))
        self._texts_handle = open(root / "texts.bin", "rb")
        size = (root / "texts.bin").stat().st_size
        self._texts = mmap.mmap(self._texts_handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    @classmethod
    def load(cls, root: str | Path) -> "ConceptGraph":
        root = Path(root)
        path = root / "graph.json"
        if not path.is_file():
            raise ConceptGraphError(f"{root}: no graph.json: build it with `generation concept-graph` "
                                    "(a build that was stopped leaves none)")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("kind") != GRAPH_KIND:
            raise ConceptGraphError(f"{path}: kind is {manifest.get('kind')!r}, not {GRAPH_KIND!r}")
        for entry in manifest["files"]:
            file = root / entry["path"]
            if not file.is_file() or file.stat().st_size != entry["bytes"]:
                raise ConceptGraphError(f"{file}: missing or not the size graph.json records ({entry['bytes']} bytes)")
        return cls(root, manifest)

    @staticmethod
    def files(root: str | Path) -> list[Path]:
        """The files a run on this graph reads (its inputs, hashed in the run's manifest)."""
        root = Path(root)
        return [root / "graph.json"] + [root / name for name in GRAPH_FILES]

    # ------------------------------------------------------------------ lookups
    def neighbours(self, concept: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.adj_ptr[concept], self.adj_ptr[concept + 1]
        return self.adj[lo:hi], self.adj_w[lo:hi]

    def documents_of(self, concept: int) -> np.ndarray:
        """Documents holding `concept`, sorted."""
        return self.cdocs[self.cdoc_ptr[concept]:self.cdoc_ptr[concept + 1]]

    def concepts_of(self, doc: int) -> np.ndarray:
        """Every concept of document `doc`, in extraction order."""
        return self.doc_concepts[self.doc_ptr[doc]:self.doc_ptr[doc + 1]]

    def mention(self, doc: int, concept: int) -> int:
        """The character offset of `concept`'s first mention in `doc`'s text, -1 when unknown or absent."""
        lo, hi = self.doc_ptr[doc], self.doc_ptr[doc + 1]
        where = np.flatnonzero(self.doc_concepts[lo:hi] == concept)
        return int(self.doc_offsets[lo + where[0]]) if len(where) else -1

    def excerpt(self, doc: int, max_chars: int, around: list[int] | None = None) -> str:
        """`doc`'s text cut to about `max_chars` characters, centred on the first mention of the
        first concept of `around` that it mentions (else its beginning), at word boundaries; cuts
        are marked "...". The offsets are the graph's, in characters of the text."""
        text = self.text(doc)
        if len(text) <= max_chars:
            return text
        centre = next((m for m in (self.mention(doc, c) for c in (around or [])) if m >= 0), 0)
        start = max(0, min(centre - max_chars // 2, len(text) - max_chars))
        end = start + max_chars
        if start > 0:
            space = text.find(" ", start, start + max_chars // 4)
            start = space + 1 if space >= 0 else start
        if end < len(text):
            space = text.rfind(" ", end - max_chars // 4, end)
            end = space if space > start else end
        return ("... " if start > 0 else "") + text[start:end].strip() + (" ..." if end < len(text) else "")

    def text(self, doc: int, max_chars: int | None = None) -> str:
        start = int(self.text_offset[doc])
        text = bytes(self._texts[start:start + int(self.text_bytes[doc])]).decode("utf-8")
        if max_chars is not None and len(text) > max_chars:
            cut = text[:max_chars]
            space = cut.rfind(" ")
            text = (cut[:space] if space > max_chars // 2 else cut).rstrip() + " ..."
        return text

    def close(self) -> None:
        if isinstance(self._texts, mmap.mmap):
            self._texts.close()
        self._texts_handle.close()
