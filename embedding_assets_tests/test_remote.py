"""The remote backend against a real Infinity server (embedders/remote.py).

Infinity runs in a venv of its own (dev/infinity.py; EA_INFINITY_VENV, default one per machine in
the model cache, installed on first use). Misbehaving services are Infinity behind a small proxy that answers
429 or 503, rejects one input, or alters vectors as another model would.
"""

import http.server
import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from embedding_assets.dev.harness import collection, load_sample, materialize, metadata
from embedding_assets.dev.infinity import InfinityServer, default_venv
from embedding_assets.embedders.remote import (
    CANARY_TEXTS,
    InputRejected,
    ModelMismatch,
    RemoteEmbedder,
    ServiceUnavailable,
    pack,
)
from embedding_assets.embedders.sentence_transformer import default_model_path
from embedding_assets.stores.feature_store import FeatureStore


def test_requests_are_packed_by_tokens_within_both_limits():
    sizes = [500, 10, 300, 9000, 250, 250, 40]
    batches = pack(sizes, max_tokens=800, max_inputs=3)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert [3] in batches  # over the limit: alone
    for batch in batches:
        assert len(batch) <= 3 and (len(batch) == 1 or sum(sizes[i] for i in batch) <= 800)


@pytest.fixture(scope="session")
def infinity(tmp_path_factory):
    venv = default_venv()
    log = tmp_path_factory.mktemp("infinity") / "infinity.log"
    with InfinityServer(venv, log=log, model=default_model_path()) as server:  # the default model
        yield server


class Proxy:
    """Forwards to Infinity; ``mode`` decides how it misbehaves."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.mode = "pass"
        self.failures_left = 0
        self.requests = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.requests += 1
                texts = json.loads(body)["input"]
                if proxy.mode == "429" and proxy.failures_left > 0:
                    proxy.failures_left -= 1
                    return self._reply(429, b'{"error": "slow down"}', {"Retry-After": "1"})
                if proxy.mode == "503":
                    return self._reply(503, b'{"error": "overloaded"}')
                if proxy.mode == "reject" and any("POISON" in t for t in texts):
                    return self._reply(400, b'{"error": "input not accepted"}')
                request = urllib.request.Request(
                    proxy.target + "/embeddings", data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    answer = json.loads(response.read())
                if proxy.mode == "other-model":  # the same name, another model's vectors
                    for item in answer["data"]:
                        v = np.asarray(item["embedding"])
                        item["embedding"] = np.roll(v, 7).tolist()
                return self._reply(200, json.dumps(answer).encode())

            def _reply(self, code, body, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def proxy(infinity):
    p = Proxy(infinity.url)
    yield p
    p.close()


def _remote(urls, infinity, **kwargs) -> RemoteEmbedder:
    return RemoteEmbedder(default_model_path(), urls, served_model=infinity.served_model, **kwargs)


@pytest.mark.servers
@pytest.mark.slow
def test_remote_vectors_are_the_local_models(infinity, embedder):
    texts = [*CANARY_TEXTS, "A longer text about bread, flour, water, salt and a long, slow rise. " * 10]
    remote = _remote([infinity.url], infinity).encode(texts)
    local = embedder.encode(texts)
    cosine = np.sum(remote * local, axis=1)
    print(f"cosine remote/local: min {cosine.min():.6f}")
    assert cosine.min() >= 0.99


@pytest.mark.servers
@pytest.mark.slow
def test_overload_is_ridden_out_and_outages_fail_the_step_not_the_documents(infinity, proxy):
    proxy.mode, proxy.failures_left = "429", 3
    embedder = _remote([proxy.url], infinity, concurrency=2, retry_seconds=30)
    started = time.monotonic()
    vectors = embedder.encode(["one", "two", "three"])
    assert vectors.shape == (3, 384) and proxy.failures_left == 0
    assert proxy.requests == 4  # three refusals, then the answer
    assert time.monotonic() - started >= 2.5  # each refusal's Retry-After: 1 was honoured

    proxy.mode = "503"
    embedder = _remote([proxy.url], infinity, retry_seconds=2)
    with pytest.raises(ServiceUnavailable) as failure:
        embedder.encode(["one"])
    assert embedder.is_transient(failure.value)  # lib/embed fails the step, blames no document


@pytest.mark.servers
@pytest.mark.slow
def test_an_input_the_service_rejects_is_the_inputs_fault(infinity, proxy):
    proxy.mode = "reject"
    embedder = _remote([proxy.url], infinity)
    with pytest.raises(InputRejected) as failure:
        embedder.encode(["fine", "POISON here"])
    assert not embedder.is_transient(failure.value)  # bisected and dead-lettered by lib/embed


@pytest.mark.servers
@pytest.mark.slow
def test_a_dead_endpoint_fails_over_to_a_live_one(infinity):
    embedder = _remote(["http://127.0.0.1:9", infinity.url], infinity, retry_seconds=30)
    vectors = embedder.encode([f"text {i}" for i in range(40)])
    assert vectors.shape == (40, 384)
    assert embedder.endpoints[0].down_until > 0  # marked down, the rest went to the live one


@pytest.mark.servers
@pytest.mark.slow
def test_another_model_behind_the_same_name_is_refused_by_its_canaries(infinity, proxy):
    reference = _remote([infinity.url], infinity).verify(None)
    proxy.mode = "other-model"
    embedder = _remote([infinity.url, proxy.url], infinity)
    with pytest.raises(ModelMismatch, match=proxy.url.replace(".", r"\.")):
        embedder.verify(reference)
    assert _remote([infinity.url], infinity).verify(reference) is reference


@pytest.mark.servers
@pytest.mark.slow
def test_the_pipeline_embeds_through_the_service_and_refuses_another_model(
    pipeline_env, monkeypatch, infinity, proxy, measure
):
    load_sample(pipeline_env, 30)
    monkeypatch.setenv("EA_BACKEND", "remote")
    monkeypatch.setenv("EA_EMBED_URLS", f"{infinity.url},{proxy.url}")
    monkeypatch.setenv("EA_EMBED_MODEL", infinity.served_model)
    result = materialize()
    assert metadata(result, "document_vectors")["device"].startswith("remote:")
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    assert store.control.versions()[version].precision == "remote"
    assert measure(collection(pipeline_env), store, version, "remote backend").none
    assert store.control.canary(version) is not None

    proxy.mode = "other-model"  # one endpoint now serves another model under the same name
    collection(pipeline_env).update_one({"doc_id": "doc-000001"}, {"$set": {"body": "Changed."}})
    failed = materialize(raise_on_error=False)
    assert not failed.success
    message = " ".join(
        e.event_specific_data.error.message for e in failed.all_events if e.event_type_value == "STEP_FAILURE"
    )
    assert proxy.url in message and "another model" in message
    refused = measure(collection(pipeline_env), store, version, "refused: the edit waits for a right model")
    assert refused.stale == ("doc-000001",) and not refused.lost and not refused.extra
