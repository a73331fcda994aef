"""Token-window chunking with the embedding model's own tokenizer.

Chunks are slices of the original text (by the tokenizer's character offsets), so what
is embedded is real text, not detokenized word pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedding_assets.lib.protocols import Tokenizer


@dataclass(frozen=True)
class Chunk:
    text: str
    n_tokens: int


# How far back a window end may move to avoid cutting a word in two.
_MAX_BACKOFF = 16


def window_spans(
    offsets: Sequence[tuple[int, int]], window: int, overlap: int, max_windows: int | None = None
) -> list[tuple[int, int, int]]:
    """Cut a token sequence into windows of at most ``window`` tokens overlapping by ``overlap``,
    the first ``max_windows`` of them when given.

    Returns ``(char_start, char_end, n_tokens)`` per window. A window end is moved back (a
    little) to the nearest word boundary so that re-tokenizing the slice gives the same tokens.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    if not 0 <= overlap < window:
        raise ValueError("overlap must be in [0, window)")
    n = len(offsets)
    spans: list[tuple[int, int, int]] = []
    start = 0
    while start < n:
        end = min(start + window, n)
        if end < n:
            # offsets[end] starts a word when there is a gap before it.
            cut = end
            while cut > start + 1 and end - cut < _MAX_BACKOFF and offsets[cut][0] == offsets[cut - 1][1]:
                cut -= 1
            if offsets[cut][0] != offsets[cut - 1][1]:
                end = cut
        spans.append((offsets[start][0], offsets[end - 1][1], end - start))
        if end >= n or len(spans) == max_windows:
            break
        start = max(end - overlap, start + 1)
    return spans


def chunk_texts(
    texts: list[str], tokenizer: Tokenizer, *, window: int, overlap: int, max_windows: int | None = None
) -> list[list[Chunk]]:
    """Chunks of each text (the first ``max_windows``); an empty text has no chunks."""
    if not texts:
        return []
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        verbose=False,
    )
    result: list[list[Chunk]] = []
    for text, offsets in zip(texts, encoded["offset_mapping"], strict=True):
        spans = window_spans(offsets, window, overlap, max_windows) if offsets else []
        result.append([Chunk(text[a:b], k) for a, b, k in spans])
    return result
