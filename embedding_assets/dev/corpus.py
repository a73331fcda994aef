"""A multilingual sample corpus written for this project, generated deterministically.

Four topics in fourteen languages; bodies mix sentences of one topic with a realistic
(log-normal) length spread, so nearest neighbours are meaningful and chunking is exercised.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from importlib import resources

TOPICS = ("climate", "cooking", "football", "computing")


def _load_text() -> dict[str, dict[str, tuple[str, list[str]]]]:
    """language -> topic -> (title, sentences), from the package's corpus_text.json."""
    raw = json.loads(resources.files(__package__).joinpath("corpus_text.json").read_text("utf-8"))
    return {
        language: {topic: (entry["title"], entry["sentences"]) for topic, entry in topics.items()}
        for language, topics in raw.items()
    }


TEXT = _load_text()
LANGUAGES = tuple(TEXT)
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def generate_documents(
    n: int, *, seed: int = 7, mean_sentences: float = 6.0, start: int = 0
) -> Iterator[dict]:
    """``n`` documents ``doc-000000 ...`` shaped like the source collection."""
    rng = random.Random(seed)
    for i in range(start, start + n):
        language = LANGUAGES[i % len(LANGUAGES)]
        topic = TOPICS[(i // len(LANGUAGES)) % len(TOPICS)]
        title, sentences = TEXT[language][topic]
        count = max(1, round(rng.lognormvariate(0, 0.6) * mean_sentences))
        body = " ".join(rng.choice(sentences) for _ in range(count))
        when = EPOCH + dt.timedelta(seconds=i)  # 1M documents span 12 days: all in the past
        yield {
            "doc_id": f"doc-{i:06d}",
            "title": title,
            "body": body,
            "language": language,
            "topic": topic,
            "indexed_at": when,
            "modified_at": when,
        }


def ensure_indexes(collection: object) -> None:
    """The indexes the reads and the change sensor rely on. The collection's owner creates them
    (docs/operations.md, Security): the pipeline's MongoDB user may only read and watch."""
    collection.create_index("doc_id")  # type: ignore[attr-defined]
    collection.create_index([("modified_at", 1), ("doc_id", 1)])  # type: ignore[attr-defined]


def load_into(collection: object, documents: list[dict]) -> int:
    """Upsert by doc_id, so loading twice leaves one copy of each document (a document
    without a doc_id is inserted as it is)."""
    from pymongo import InsertOne, ReplaceOne

    ops = [
        ReplaceOne({"doc_id": d["doc_id"]}, d, upsert=True) if "doc_id" in d else InsertOne(dict(d))
        for d in documents
    ]
    written = 0
    for start in range(0, len(ops), 1000):
        result = collection.bulk_write(ops[start : start + 1000], ordered=False)  # type: ignore[attr-defined]
        written += result.upserted_count + result.modified_count + result.inserted_count
    return written
