"""The static tier embeds the whole text, however long."""

from pathlib import Path

import numpy as np
import pytest

from embedding_assets.dev import corpus
from embedding_assets.embedders.static import StaticEmbedder

pytestmark = pytest.mark.slow


def test_a_long_document_is_embedded_whole_not_its_first_512_tokens(static_dir):
    embedder = StaticEmbedder(None, cache_dir=Path(static_dir))
    first = " ".join(corpus.TEXT["en"]["cooking"][1] * 400)  # ~ 4,000 tokens about bread
    second = " ".join(corpus.TEXT["en"]["football"][1] * 400)  # then as many about football
    whole, head, tail = embedder.encode([f"{first} {second}", first[:2000], second])
    assert len(first) + len(second) > 40_000
    assert float(whole @ tail) > 0.5  # the second half is in the vector (truncated: ~0.15)
    assert float(whole @ head) < 0.95  # and it is not just the first 512 tokens
    # the version says so: releases that truncated wrote another version
    assert embedder.fingerprint.endswith(":whole")
    assert np.isclose(np.linalg.norm(whole), 1.0)
