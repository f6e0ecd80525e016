"""Keyword search test data and its measures: the quality data set (captions carrying exact tokens a dense model
misses: part numbers, names, rare words), a plain-Python BM25 oracle, old-style collections (made before keyword
search), and R@K of the dense, keyword and hybrid rankings built as engine requests.

Run as a script for the figures of docs/retrieval-quality.md ("Hybrid search"):
    python tests/helpers/keyword_data.py --model demo/shapes-clip
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmindex.connectors.base import SearchRequest
from mmindex.connectors.queries import KEYWORDS, Fusion, Nearest, Prefetch
from mmindex.pipeline.ingest.sample import write_sample
from mmindex.pipeline.query.keywords import KeywordSettings, bm25, keyword_query

SURNAMES = ("Ortega", "Nakamura", "Okafor", "Lindqvist", "Castellanos", "Brennan", "Haddad", "Kowalczyk",
            "Moreau", "Sato", "Adeyemi", "Fitzgerald", "Novak", "Quispe", "Varga", "Zhou")
RARE = ("anodised", "knurled", "galvanic", "filigree", "chamfered", "lacquered", "serrated", "gimbaled",
        "tessellated", "burnished", "perforated", "enamelled")


# -- the quality data set ------------------------------------------------------------------------
def part_code(rng: random.Random) -> str:
    """A part number such as XJ-4821: two capitals, a dash, four digits."""
    return f"{rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}{rng.choice('ABCDEFGHJKLMNPRSTVWXZ')}-{rng.randrange(1000, 10000)}"


def write_part_numbers(folder, rows: int = 400, seed: int = 7, width: int = 64, height: int = 64) -> Path:
    """Coloured-shape rows (``mmindex sample``) whose captions name only the colour and shape, then a part number,
    a maker's name and a finish: "a red circle, part XJ-4821 by Okafor, knurled". About rows/80 rows share each
    colour and shape, so the image (and a dense model reading the caption) cannot tell them apart: only the exact
    tokens can. Also ``title`` ("Okafor XJ-4821"), a text field for ``--text-fields``. Every part number is unique."""
    folder = Path(folder)
    write_sample(folder, rows=rows, seed=seed, width=width, height=height)
    path = next(folder.glob("*.parquet"))
    table = pq.read_table(path)
    rng, codes = random.Random(f"parts-{seed}"), set()
    captions, titles = [], []
    for short in table.column("short_caption").to_pylist():
        code = part_code(rng)
        while code in codes:
            code = part_code(rng)
        codes.add(code)
        name, finish = rng.choice(SURNAMES), rng.choice(RARE)
        captions.append(f"{short}, part {code} by {name}, {finish}")
        titles.append(f"{name} {code}")
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array(captions))
    pq.write_table(table.append_column("title", pa.array(titles)), path)
    return folder


# -- a plain-Python BM25 -------------------------------------------------------------------------
def token_ids(settings: KeywordSettings, words) -> list[int]:
    """The token id of each word that is one token (stopwords give none): the oracle's tokenizer, word by word."""
    found = []
    for word in words:
        indices = list(bm25(settings).embed_query(word).indices)
        assert len(indices) <= 1, f"{word!r} is more than one token"
        found.extend(indices)
    return found


def oracle_weights(tokens: list[int], settings: KeywordSettings) -> dict[int, float]:
    """BM25 document weights: tf·(k+1) / (tf + k·(1 − b + b·|d|/avg_len)) (Robertson and Zaragoza 2009, eq. 3.15)."""
    k, b, length = settings.k, settings.b, len(tokens)
    return {token: tf * (k + 1) / (tf + k * (1 - b + b * length / settings.avg_len))
            for token, tf in Counter(tokens).items()}


def oracle_scores(documents: dict[str, list[int]], query: list[int], settings: KeywordSettings) -> dict[str, float]:
    """Point → Σ over the query's distinct tokens of IDF·weight, IDF = ln(1 + (N − n + 0.5)/(n + 0.5)) as Qdrant's
    ``idf`` modifier computes it (N: points with a keyword vector, n: those holding the token); points sharing no
    token are left out, as a sparse search leaves them."""
    held = {point: tokens for point, tokens in documents.items() if tokens}
    total = len(held)
    frequency = Counter(token for tokens in held.values() for token in set(tokens))
    scores = {}
    for point, tokens in held.items():
        weights = oracle_weights(tokens, settings)
        shared = set(query) & set(weights)
        if shared:
            scores[point] = sum(math.log(1 + (total - frequency[t] + 0.5) / (frequency[t] + 0.5)) * weights[t]
                                for t in shared)
    return scores


# -- collections made before keyword search ------------------------------------------------------------------
def create_old_style(store, spec) -> None:
    """Create ``store``'s collection for ``spec`` as mmindex did before keyword search: no sparse ``keywords``
    vector, and no ``sparse_vectors`` in its record."""
    import qdrant_edge

    from mmindex.connectors.qdrant_edge import QdrantEdgeStore

    with pytest.MonkeyPatch.context() as patch:
        if isinstance(store, QdrantEdgeStore):
            real = qdrant_edge.EdgeConfig
            patch.setattr(qdrant_edge, "EdgeConfig",
                          lambda **kw: real(**{k: v for k, v in kw.items() if k != "sparse_vectors"}))
        else:
            create = store.client.create_collection
            patch.setattr(store.client, "create_collection", lambda *a, **kw: create(
                *a, **{k: v for k, v in kw.items() if k != "sparse_vectors_config"}))
        store.ensure_collection(spec)
    store.update_metadata({"sparse_vectors": None})


# -- measures -----------------------------------------------------------------------------------------
def requests(text_vector, keywords, mode: str, limit: int = 10, pool: int = 100, fusion: str = "rrf"):
    """The engine request of one mode: ``dense`` (text → image vectors), ``keyword`` (BM25) or ``hybrid`` (both
    legs, ``pool`` points each, fused by the engine with ``fusion``)."""
    if mode == "dense":
        return SearchRequest(vector=text_vector, using="image", limit=limit)
    if mode == "keyword":
        return SearchRequest(query=Nearest(keywords, KEYWORDS), limit=limit)
    return SearchRequest(query=Fusion(fusion), limit=limit, prefetch=[
        Prefetch(Nearest(text_vector, "image"), pool), Prefetch(Nearest(keywords, KEYWORDS), pool)])


def recall_at(store, encoder, queries, relevant, modes=("dense", "keyword", "hybrid"), ks=(1, 5, 10),
              fusion: str = "rrf") -> dict[str, dict[str, float]]:
    """R@K per mode: the share of ``queries`` (texts) with a relevant point in the top K; ``relevant(i, hit)``
    says whether a hit answers query i."""
    meta = store.metadata()
    vectors = encoder.encode_texts(list(queries))
    found = {mode: [] for mode in modes}
    for index, (text, vector) in enumerate(zip(queries, vectors)):
        keywords = keyword_query(text, meta)
        for mode in modes:
            hits = store.search(requests(vector, keywords, mode, limit=max(ks), fusion=fusion))
            found[mode].append(next((rank for rank, hit in enumerate(hits) if relevant(index, hit)), None))
    return {mode: {f"R@{k}": round(sum(r is not None and r < k for r in ranks) / len(ranks), 3) for k in ks}
            for mode, ranks in found.items()}


def _measure(model: str, rows: int, seeds) -> None:
    from mmindex import IngestOptions, ingest
    from mmindex.connectors.qdrant_edge import QdrantEdgeStore
    from mmindex.pipeline.models.encoder import Encoder

    encoder = Encoder(model, device="cpu")
    root = Path(tempfile.mkdtemp(prefix="keyword-quality-"))
    for seed in seeds:
        for kind in ("parts", "ordinary"):
            data = root / f"{kind}-{seed}"
            if kind == "parts":
                write_part_numbers(data, rows=rows, seed=seed)
            else:
                write_sample(data, rows=rows, seed=seed, width=64, height=64)
            store = QdrantEdgeStore(f"{kind}-{seed}", data_dir=root / "store")
            ingest([str(data)], store, encoder, IngestOptions(batch_size=64))
            table = pq.read_table(next(data.glob("*.parquet"))).to_pylist()
            by_id = {p.id: p.payload for page in [store.scroll(limit=100_000)[0]] for p in page}
            captions = [row["caption"] for row in table]
            if kind == "parts":  # the exact row: its part number
                relevant = lambda i, hit: by_id[hit.id]["caption"] == captions[i]  # noqa: E731
            else:  # same colour and shape, as the demo model's card counts it
                relevant = lambda i, hit: (by_id[hit.id]["color"], by_id[hit.id]["shape"]) == (  # noqa: E731
                    table[i]["color"], table[i]["shape"])
            asked = [("captions", captions)] + ([("short", [row["short_caption"] for row in table])]
                                                 if kind == "ordinary" else [])
            for name, queries in asked:
                for fusion in ("rrf", "dbsf"):
                    figures = recall_at(store, encoder, queries, relevant, fusion=fusion)
                    print(f"{kind:8} {name:8} seed {seed} rows {rows} fusion {fusion}: {figures}", flush=True)
            store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo/shapes-clip")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seeds", default="7,8")
    args = parser.parse_args()
    _measure(args.model, args.rows, [int(s) for s in args.seeds.split(",")])
    sys.exit(0)
