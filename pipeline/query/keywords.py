"""The keyword vector: one tokenizer and one BM25 rule for the caption and the ``--text-fields``, on both stores.

Every point's text (its caption, then the values of the fields named at ingest, list values joined) becomes the
sparse ``keywords`` vector of BM25 document weights, computed here by Qdrant Edge's own ``Bm25`` (Rust: Unicode word
tokenizer, lowercase, ASCII folding, English stopwords and Snowball stemmer, tokens hashed to 32-bit ids) and sent
as plain numbers to whichever store holds the collection, so Edge and the server index the very same vectors. The
engines multiply in the IDF at query time (the ``idf`` modifier), so a query is only the set of its tokens.

The settings and the fields are recorded in the collection's metadata (``keywords``) at the first write; every later
write and every query reads them from there, so a collection is never scored by two rules.
"""
from __future__ import annotations

import functools
import hashlib
import re
from importlib.metadata import PackageNotFoundError, version
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

from mmindex.connectors.base import PointRecord
from mmindex.connectors.queries import KEYWORDS, SparseVector
from mmindex.errors import CollectionMismatchError, FilterError, InputError, UsageError
from mmindex.keys import CAPTION_KEY
from mmindex.pipeline.query.fields import resolve_field

SETTINGS_KEY = "keywords"  # in the collection's metadata: the BM25 settings and the text fields (to_record)
BACKFILL_KEY = "keywords_backfill"  # in the metadata while `mmindex keywords` is unfinished: {"next": id, "done": n}
# BM25's average document length, in tokens after stopwords. Qdrant Edge's default (256) suits passages; a caption
# has 6-12 content words (mmindex sample: 7.6; COCO captions: about 10 words, 5-6 after stopwords), and a title or
# a few tags add some more. A fixed value, recorded, not a running mean: a point's weights must not depend on which
# points were written before it (a backfill and a fresh ingest of the same rows give the same vectors).
DEFAULT_AVG_LEN = 10.0
# A text that exercises the whole rule (case, punctuation, accents, stopwords, stems, digits): its document vector,
# hashed, is the rule's fingerprint; another tokenizer or hash in a later qdrant-edge shows as another fingerprint.
PROBE = "The XJ-9000's running foxes photographed at Café Zürich, 2024; naïve ÉCOLE tags: red/blue"
EMPTY = '""'  # --text-fields with no field, as a shell takes it
TEXT_TYPES = ("keyword", "null")  # recorded payload types a text field may have (strings, lists of strings; no value)


@dataclass(frozen=True)
class KeywordSettings:
    """How a collection's keyword vectors are made: BM25's ``k`` (term-frequency saturation), ``b`` (length
    normalisation) and ``avg_len`` (tokens), Qdrant Edge's ``Bm25Config`` tokenizer settings, and the payload
    ``fields`` whose text joins the caption (as given, e.g. ``meta.title``) with their Qdrant ``keys``.

    The document weight of a token with frequency tf in a document of |d| tokens is
    tf·(k+1) / (tf + k·(1 − b + b·|d|/avg_len)) (Robertson and Zaragoza, "The Probabilistic Relevance Framework:
    BM25 and Beyond", 2009, eq. 3.15, as qdrant-edge's ``Bm25.embed_document`` computes it); the engines weigh each
    query token by IDF = ln(1 + (N − n + 0.5)/(n + 0.5)), N points with a keyword vector, n of them holding it.
    """

    fields: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    k: float = 1.2
    b: float = 0.75
    avg_len: float = DEFAULT_AVG_LEN
    language: str = "english"
    ascii_folding: bool = True
    tokenizer: str = "word"
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", rule_fingerprint(self))

    def to_record(self) -> dict[str, Any]:
        """The metadata record (``SETTINGS_KEY``): JSON, read back by ``from_record``."""
        record = asdict(self)
        record["fields"], record["keys"] = list(self.fields), list(self.keys)
        record["engine"] = f"qdrant-edge {engine_version()} Bm25"
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "KeywordSettings":
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        known["fields"], known["keys"] = tuple(known.get("fields", ())), tuple(known.get("keys", ()))
        return cls(**known)

    def same_rule(self, other: "KeywordSettings") -> bool:
        """Whether both make the same vectors from the same point: the settings, fields and tokenizer agree."""
        return self == other and self.fingerprint == other.fingerprint


def engine_version() -> str:
    try:
        return version("qdrant-edge-py")
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=16)
def _bm25(k: float, b: float, avg_len: float, language: str, ascii_folding: bool, tokenizer: str):
    # qdrant-edge (Rust extension, ~0.2 s to import): loaded when the first keyword vector is made
    import qdrant_edge as qe

    kinds = {"word": qe.TokenizerType.Word, "multilingual": qe.TokenizerType.Multilingual,
             "whitespace": qe.TokenizerType.Whitespace}
    return qe.Bm25(qe.Bm25Config(k=k, b=b, avg_len=avg_len, language=language, ascii_folding=ascii_folding,
                                 lowercase=True, tokenizer=kinds[tokenizer]))


def bm25(settings: KeywordSettings):
    """qdrant-edge's ``Bm25`` model for these settings (one per settings, kept)."""
    return _bm25(float(settings.k), float(settings.b), float(settings.avg_len), settings.language,
                 bool(settings.ascii_folding), settings.tokenizer)


def rule_fingerprint(settings: KeywordSettings) -> str:
    """16 hex digits of SHA-256 over the document vector of ``PROBE`` under ``settings`` (indices and weights)."""
    vector = bm25(settings).embed_document(PROBE)
    pairs = sorted(zip(vector.indices, vector.values))
    return hashlib.sha256(repr([(int(i), round(float(v), 6)) for i, v in pairs]).encode()).hexdigest()[:16]


def _sparse(vector) -> SparseVector:
    return SparseVector(tuple(int(i) for i in vector.indices), tuple(float(v) for v in vector.values))


# -- a point's text ------------------------------------------------------------------------
def text_values(payload: Mapping[str, Any], key: str, field_name: str | None = None) -> list[str]:
    """The strings at the Qdrant path ``key`` of ``payload`` (``title``, ``meta.title``, ``"my key".x``,
    ``items[].name``), lists walked at any depth, nulls skipped. ``InputError`` naming the field for a number,
    boolean or object there: keyword search indexes text only (cast such a column to string to index it)."""
    steps = [quoted or bare for quoted, bare in re.findall(r'"([^"]*)"|([^.\[\]"]+)', key)]
    found: list[str] = []
    for value in _walk(payload, steps):
        if isinstance(value, str):
            found.append(value)
        else:
            raise InputError(f"text field {field_name or key!r} holds {type(value).__name__} value "
                             f"{value!r}, not text; keyword search indexes strings and lists of strings (cast the "
                             "column to string, or leave the field out)")
    return found


def _walk(value: Any, steps: list[str]) -> Iterator[Any]:
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, steps)
    elif steps:
        if isinstance(value, dict):
            yield from _walk(value.get(steps[0]), steps[1:])
    else:
        yield value


def keyword_text(caption: str | None, payload: Mapping[str, Any], fields: Sequence[str],
                 names: Sequence[str] = ()) -> str:
    """One document: the caption, then each field's strings (``fields``: Qdrant keys; ``names``: how the user
    named them, for errors), joined by spaces."""
    parts = [caption] if caption else []
    for index, key in enumerate(fields):
        parts.extend(text_values(payload, key, names[index] if index < len(names) else None))
    return " ".join(part for part in parts if part)


def keyword_document(caption: str | None, payload: Mapping[str, Any], fields: Sequence[str],
                     settings: KeywordSettings) -> SparseVector | None:
    """A point's keyword vector: BM25 document weights (``KeywordSettings``) of its caption and the ``fields``
    (Qdrant keys; usually ``settings.keys``), or None when that text has no indexable token (no caption, only
    stopwords or punctuation): such a point gets no keyword vector, so it is not counted in the IDF's N either.
    Raises ``InputError`` when a field holds a number, boolean or object."""
    text = keyword_text(caption, payload, fields, settings.fields if tuple(fields) == settings.keys else ())
    if not text:
        return None
    vector = bm25(settings).embed_document(text)
    return _sparse(vector) if len(vector.indices) else None


def with_keyword_vectors(points: Sequence[PointRecord], settings: KeywordSettings | None) -> Sequence[PointRecord]:
    """``points`` with their keyword vectors added (caption from the payload's ``caption``), in place; as they
    are when ``settings`` is None (a collection made before keyword search)."""
    if settings is None:
        return points
    for point in points:
        vector = keyword_document(point.payload.get(CAPTION_KEY), point.payload, settings.keys, settings)
        if vector is not None:
            point.vectors[KEYWORDS] = vector
    return points


# -- the collection's record -----------------------------------------------------------------
def text_field_keys(names: Sequence[str], payload_types: Mapping[str, str] | None) -> tuple[str, ...]:
    """The Qdrant keys of ``--text-fields`` (nested names as ``--where`` takes them: ``meta.title``,
    ``items.name``), checked against the recorded payload types: a field must hold text (strings or lists of
    strings). ``UsageError`` naming the field otherwise (unknown, a number, a date, a struct, the caption).
    ``payload_types`` None (not recorded): any name is taken, and ``text_values`` checks the values."""
    keys = []
    for name in names:
        if name == CAPTION_KEY:
            raise UsageError("--text-fields: the caption is always in the keyword vector; name other fields")
        try:
            ref = resolve_field(name, False, None if payload_types is None else dict(payload_types), name)
        except FilterError as error:
            raise UsageError(f"--text-fields: {error.message.replace(f' in: {name} (', ' (')}") from error
        if ref.type is not None and ref.type not in TEXT_TYPES:
            raise UsageError(f"--text-fields: field {name!r} holds {ref.type} values, not text; keyword search "
                             "indexes strings and lists of strings (cast the column to string to index it)")
        keys.append(ref.key)
    return tuple(keys)


def new_settings(names: Sequence[str], payload_types: Mapping[str, str] | None) -> KeywordSettings:
    """Today's BM25 rule over the caption and the fields ``names`` (checked: ``text_field_keys``)."""
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    return KeywordSettings(fields=names, keys=text_field_keys(names, payload_types))


def has_keywords_vector(meta: Mapping[str, Any] | None) -> bool:
    """Whether the collection has the sparse ``keywords`` vector (made since keyword search, or backfilled)."""
    return bool(meta) and KEYWORDS in (meta.get("sparse_vectors") or [])


def recorded_settings(meta: Mapping[str, Any] | None) -> KeywordSettings | None:
    """The rule a collection's keyword vectors are made by, or None: no keyword vector, or none written yet."""
    if not has_keywords_vector(meta) or not isinstance(meta.get(SETTINGS_KEY), dict):
        return None
    return KeywordSettings.from_record(meta[SETTINGS_KEY])


def ingest_record(meta: Mapping[str, Any] | None, payload_types: Mapping[str, str], text_fields: Sequence[str] | None,
                  collection: str) -> dict[str, Any] | None:
    """The keyword record an ingest writes at its first write (None: nothing to write), checked before it writes.

    ``text_fields`` None keeps the recorded fields (none for a new collection). Refused: fields other than the
    recorded ones (``CollectionMismatchError``: ``mmindex keywords`` re-does the vectors with new fields),
    ``--text-fields`` on a collection made before keyword search, and a tokenizer that no longer makes the
    recorded rule's vectors (``UsageError``, both pointing at ``mmindex keywords``)."""
    if meta is not None and not has_keywords_vector(meta):
        if text_fields:
            raise UsageError(f"collection {collection!r} was made before keyword search and has no keyword vector: "
                             f"run `mmindex keywords -c {collection} --text-fields {','.join(text_fields)}` first "
                             "(it adds the vector from the stored captions and payloads, no model needed)")
        return None
    recorded = recorded_settings(meta)
    if recorded is None:
        return new_settings(text_fields or (), payload_types).to_record()
    if text_fields is not None:
        wanted = tuple(dict.fromkeys(n.strip() for n in text_fields if n.strip()))
        if wanted != recorded.fields:
            raise CollectionMismatchError(
                f"collection {collection!r} makes keyword vectors from the caption and "
                f"{_named(recorded.fields)}; this run names {_named(wanted)}. Run with the same --text-fields, or "
                f"re-do every point's keyword vector with `mmindex keywords -c {collection} --text-fields "
                f"{','.join(wanted) or EMPTY}` (no model needed)")
    check_rule(recorded, collection)
    return None


def _named(fields: Sequence[str]) -> str:
    return f"--text-fields {','.join(fields)}" if fields else "no --text-fields"


def check_rule(recorded: KeywordSettings, collection: str) -> None:
    """``UsageError`` when this qdrant-edge's tokenizer no longer makes the recorded rule's vectors."""
    today = replace(recorded, fingerprint="")
    if today.fingerprint != recorded.fingerprint:
        raise UsageError(f"the keyword vectors of collection {collection!r} were made by another BM25 tokenizer "
                         f"(fingerprint {recorded.fingerprint}; this qdrant-edge {engine_version()} makes "
                         f"{today.fingerprint}): run `mmindex keywords -c {collection}` to make them again")


def keyword_query(text: str, meta: Mapping[str, Any] | None, collection: str | None = None) -> SparseVector:
    """A query's keyword vector: its distinct tokens under the collection's recorded rule, each with weight 1
    (the engine multiplies in each token's IDF, so a hit scores Σ IDF(t)·w(t, d) over the tokens it shares).

    ``UsageError``: the collection has no keyword vectors (made before keyword search; run ``mmindex keywords``),
    its backfill is unfinished, its vectors were made by another tokenizer, or ``text`` has no token keyword
    search indexes (only stopwords such as "the" or "of", or punctuation).
    """
    name = collection or (meta or {}).get("name") or "NAME"
    settings = recorded_settings(meta)
    if settings is None:
        raise UsageError(f"collection {name!r} has no keyword vectors (it was made before keyword search): run "
                         f"`mmindex keywords -c {name}` to add them from the stored captions (no model needed)")
    backfill = (meta or {}).get(BACKFILL_KEY)
    if backfill:
        raise UsageError(f"the keyword vectors of collection {name!r} are being made ({backfill.get('done', 0):,} "
                         f"points so far) and that run has not finished: run `mmindex keywords -c {name}` to "
                         "finish it")
    check_rule(settings, name)
    vector = bm25(settings).embed_query(text)
    if not len(vector.indices):
        raise UsageError(f"the query {text!r} has no word keyword search can use (stopwords such as 'the', 'of' "
                         "and 'a', and punctuation, are not indexed): use other words, or --mode dense")
    return _sparse(vector)
