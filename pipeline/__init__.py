"""The ingest and query flow: source → images → encoder → records → a store, and query.

Imported as ``mmindex.pipeline``; the public API is re-exported by ``mmindex`` itself
(``from mmindex import ingest, search, Encoder, ...``). Importing this package is light: each
module pulls in torch, sentence-transformers or a Qdrant engine only when it needs one.
"""
