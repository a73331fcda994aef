"""What text of a document gets embedded, and the hash that says when it changed.

The content hash covers exactly the embedded text (after normalization) together with
the version tag, so a document whose embedded text is unchanged is never re-embedded,
and a new version never mistakes an old entry for a current one.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import polars as pl
import xxhash
from bson.datetime_ms import DatetimeMS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from embedding_assets.lib.versioning import EmbeddingSpec

# Bump when the normalization below changes what gets embedded: it is part of the version tag.
TEXT_RULES = "t1"

_SURROGATES = re.compile("[\ud800-\udfff]")
# C0 and C1 controls; tab/newline/CR are whitespace and are folded by split() below.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# anything the repairs below act on or note
_SUSPECT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd]")


def normalize_text(value: str) -> str:
    """NFC, lone surrogates replaced, control characters dropped, whitespace folded."""
    return repair_text(value)[0]


def repair_text(value: str) -> tuple[str, list[str]]:
    """:func:`normalize_text`, with a note for every repair that changed the content."""
    if not _SUSPECT.search(value):  # most text: one scan finds nothing to repair (NFC adds none)
        if not value.isascii():  # ASCII is its own NFC
            value = unicodedata.normalize("NFC", value)
        return " ".join(value.split()), []
    notes = []
    if _SURROGATES.search(value):
        value = _SURROGATES.sub("\ufffd", value)
        notes.append("lone surrogates replaced")
    elif "\ufffd" in value:
        notes.append("invalid UTF-8 replaced")  # the driver decodes bad bytes to U+FFFD
    value = unicodedata.normalize("NFC", value)
    if _CONTROLS.search(value):
        value = _CONTROLS.sub(" ", value)
        notes.append("control characters removed")
    return " ".join(value.split()), notes


@dataclass(frozen=True)
class EmbeddableText:
    """The text to embed, or why there is none."""

    text: str
    skip_reason: str | None = None
    note: str | None = None


def coerce_text_field(value: object, name: str) -> tuple[str | None, str | None]:
    """A source field as text, with a note when it was not text."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace"), f"{name} was bytes, decoded as UTF-8"
    # a date reads "datetime" whether a scan decoded it as DatetimeMS (sources/mongo.py) or not
    kind = "datetime" if isinstance(value, DatetimeMS) else type(value).__name__
    return None, f"{name} is {kind}, not text; ignored"


def embeddable_text(
    title: str | None,
    body: str | None,
    *,
    title_repeat: int = 2,
    max_chars: int = 200_000,
    notes: str | None = None,
    oversize: str = "truncate",
) -> EmbeddableText:
    """Title repeated ``title_repeat`` times, then the body: titles weigh more, as users asked.

    Text longer than ``max_chars`` is truncated with a note, or rejected when ``oversize`` is
    ``"reject"``; the cap bounds tokenizer work whatever the source holds.
    """
    title_text, title_repairs = repair_text(title or "")
    body_text, body_repairs = repair_text(body or "")
    notes_list = ([notes] if notes else []) + sorted(set(title_repairs + body_repairs))
    if not title_text and not body_text:
        reason = "no text: title and body are missing or empty"
        if notes_list:
            reason += f" ({'; '.join(notes_list)})"
        return EmbeddableText("", skip_reason=reason)
    parts = [title_text] * max(1, title_repeat) if title_text else []
    if body_text:
        parts.append(body_text)
    text = "\n".join(parts)
    if len(text) > max_chars:
        if oversize == "reject":
            return EmbeddableText(
                "", skip_reason=f"text of {len(text)} characters is over the cap of {max_chars}"
            )
        notes_list.append(f"truncated from {len(text)} to {max_chars} characters")
        text = text[:max_chars]
    return EmbeddableText(text, note="; ".join(notes_list) or None)


def content_hash(text: str, version: str) -> int:
    """64-bit hash of the embedded text under one version tag."""
    h = xxhash.xxh3_64(version.encode())
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.intdigest()


def document_text(
    title: str | None, body: str | None, spec: EmbeddingSpec, notes: str | None = None
) -> EmbeddableText:
    """The text a document's entry embeds under ``spec``: the one rule chunking, coverage and
    audits share."""
    return embeddable_text(
        title,
        body,
        title_repeat=spec.title_repeat,
        max_chars=spec.max_chars,
        notes=notes,
        oversize=spec.oversize,
    )


def expected_content_hash(title: str | None, body: str | None, spec: EmbeddingSpec) -> int | None:
    """The content hash a document's entry must carry under ``spec``; None: it gets no entry."""
    text = document_text(title, body, spec)
    return None if text.skip_reason else content_hash(text.text, spec.tag)


# The frame-wide rule below folds whitespace with Rust's regex ``\s`` (Unicode White_Space),
# which equals Python's str.isspace() on every character outside _SUSPECT (test_text checks all).
_SUSPECT_RUST = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{fffd}"
# Below this many rows the frame-wide rule saves less than building its character class costs.
FRAME_RULE_ROWS = 1_000


@cache
def _needs_python_class() -> str:
    """A regex class of what only the per-document rule handles: the characters
    :func:`repair_text` repairs, and those NFC may change in some context (non-zero combining
    class, the second of a canonical pair, or not NFC alone), from this Python's own tables.
    Text without any of them is its own NFC, whatever Unicode version polars was built with."""
    codes = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.combining(char):
            codes.append(code)
            continue
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            pair = decomposition.split()
            if len(pair) == 2:
                codes.append(int(pair[1], 16))
            if unicodedata.normalize("NFC", char) != char:
                codes.append(code)
    # Hangul composes by algorithm, not by table: vowel and trailing jamo are second elements
    codes.extend(range(0x1161, 0x1176))
    codes.extend(range(0x11A8, 0x11C3))
    ranges: list[list[int]] = []
    for code in sorted(set(codes)):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[" + _SUSPECT_RUST + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges) + "]"


def _folded(column: str) -> pl.Expr:
    """``repair_text`` of text with nothing to repair or normalize: whitespace folded."""
    return pl.col(column).fill_null("").str.replace_all(r"\s{2,}|[^\S ]", " ").str.strip_chars(" ")


def document_texts(snapshot: pl.DataFrame, spec: EmbeddingSpec) -> pl.DataFrame:
    """:func:`document_text` for every row of a snapshot (``title``, ``body``, ``notes``), in row
    order, with its content hash: columns ``text``, ``skip_reason``, ``note``, ``content_hash``
    (null where skipped).

    In polars for rows with nothing to repair or normalize, some text and under the cap; the
    others (a few in most sources) through :func:`document_text` itself, so the two cannot
    disagree. The texts stay in polars: a Python string per document is the cost it avoids.
    """
    n = snapshot.height
    if n < FRAME_RULE_ROWS:
        return _rowwise(snapshot, spec, range(n), pl.Series("text", [""] * n, dtype=pl.String))
    repeat = max(1, spec.title_repeat)
    needs_python = _needs_python_class()
    frame = snapshot.select(
        _folded("title").alias("t"),
        _folded("body").alias("b"),
        (
            pl.col("title").fill_null("").str.contains(needs_python)
            | pl.col("body").fill_null("").str.contains(needs_python)
        ).alias("python"),
    ).with_columns(
        pl.when(pl.col("t") == "")
        .then(pl.col("b"))
        .when(pl.col("b") == "")
        .then(pl.concat_str([pl.col("t")] * repeat, separator="\n"))
        .otherwise(pl.concat_str([pl.col("t")] * repeat + [pl.col("b")], separator="\n"))
        .alias("text")
    )
    python = frame.select(
        pl.col("python")
        | ((pl.col("t") == "") & (pl.col("b") == ""))
        | (pl.col("text").str.len_chars() > spec.max_chars)
    ).to_series()
    return _rowwise(snapshot, spec, python.arg_true().to_list(), frame["text"])


def _rowwise(
    snapshot: pl.DataFrame, spec: EmbeddingSpec, rows: Iterable[int], texts: pl.Series
) -> pl.DataFrame:
    """``texts`` with ``rows`` replaced by :func:`document_text`'s, then every row hashed."""
    skips: list[str | None] = [None] * snapshot.height
    notes = snapshot["notes"].to_list()
    kept = [note or None for note in notes]
    rows = list(rows)
    if rows:
        picked = snapshot[rows]
        done = [
            document_text(title, body, spec, notes=note)
            for title, body, note in zip(
                picked["title"].to_list(), picked["body"].to_list(), picked["notes"].to_list(), strict=True
            )
        ]
        for row, one in zip(rows, done, strict=True):
            skips[row], kept[row] = one.skip_reason, one.note
        texts = texts.scatter(rows, [one.text for one in done])
    skip = pl.Series("skip_reason", skips, dtype=pl.String)
    return pl.DataFrame(
        {
            "text": texts.alias("text"),
            "skip_reason": skip,
            "note": pl.Series("note", kept, dtype=pl.String),
            "content_hash": pl.select(
                pl.when(skip.is_null()).then(content_hashes(texts, spec.tag))
            ).to_series(),
        }
    )


def content_hashes(texts: pl.Series, version: str, batch: int = 8_192) -> pl.Series:
    """:func:`content_hash` of every text, read from polars' bytes in batches: no Python string
    per text (making those costs more than the hashing)."""
    prefix = version + "\x00"
    out: list[int] = []
    for start in range(0, len(texts), batch):
        part = (pl.lit(prefix) + texts.slice(start, batch).fill_null("")).alias("x")
        joined = pl.select(
            part.str.join("").cast(pl.Binary).alias("data"),
            part.str.len_bytes().cum_sum().implode().alias("ends"),
        )
        data = memoryview(joined.item(0, 0))
        begin = 0
        for end in joined.item(0, 1):
            out.append(xxhash.xxh3_64_intdigest(data[begin:end]))
            begin = end
    return pl.Series("content_hash", out, dtype=pl.UInt64)
