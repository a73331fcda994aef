"""What text of a document gets embedded, and the hash that says when it changed.

The content hash covers exactly the embedded text (after normalization) together with
the version tag, so a document whose embedded text is unchanged is never re-embedded,
and a new version never mistakes an old entry for a current one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import xxhash

if TYPE_CHECKING:
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
    return None, f"{name} is {type(value).__name__}, not text; ignored"


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
