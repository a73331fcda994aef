"""Version tags: one per combination of model, chunking, text rules, precision and quantization.

Anything that changes the stored vectors changes the tag, so two versions coexist in the
feature store and a reader always knows which one it reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class EmbeddingSpec:
    model: str
    model_fingerprint: str
    dimension: int
    window_tokens: int
    overlap_tokens: int
    title_repeat: int
    max_chars: int
    text_rules: str
    precision: str
    quantization: str
    # What happens to text over max_chars: "truncate" or "reject". Added after the first
    # release: left out of the canonical form at its default, so earlier tags stay the same.
    oversize: str = "truncate"
    # The prompts the model expects before queries and before documents (multilingual-e5's
    # "query: " / "passage: "): a vector made with another prompt is another vector. Added
    # later, and left out of the canonical form when empty, like ``oversize``.
    query_prompt: str = ""
    document_prompt: str = ""
    # How chunk vectors become the document's (lib/pooling.py). Added later; "mean" was the rule
    # before it, so it is left out of the canonical form and earlier tags stay the same.
    pooling: str = "mean"

    def canonical(self) -> str:
        fields = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @cached_property  # asked for once per record written: computed once per spec
    def digest(self) -> bytes:
        return hashlib.blake2b(self.canonical().encode(), digest_size=16).digest()

    @cached_property  # asked for once per document hashed
    def tag(self) -> str:
        """Short, readable and unique: ``<model slug>-<8 hex>``."""
        return f"{model_slug(self.model)}-{self.digest[:4].hex()}"

    @cached_property
    def version_id(self) -> int:
        """u32 stored in every record: ties a value to its tag without spelling the tag."""
        return int.from_bytes(self.digest[:4], "big")

    def to_json(self) -> str:
        return self.canonical()

    @classmethod
    def from_json(cls, raw: str | bytes) -> EmbeddingSpec:
        return cls(**json.loads(raw))


# Fields added after the first release, with the defaults that keep earlier tags the same.
_LATER_FIELDS = {"oversize": "truncate", "query_prompt": "", "document_prompt": "", "pooling": "mean"}


def model_slug(model: str) -> str:
    name = Path(model.rstrip("/")).name or model
    if name == "model":  # packaged models often sit in a folder called model
        name = Path(model.rstrip("/")).parent.name or name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:32] or "model"


def model_fingerprint(model: str) -> str:
    """Identity of the weights: for a local folder, its config files and weight sizes."""
    path = Path(model)
    if not path.is_dir():
        return model
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        rel = f.relative_to(path).as_posix()
        h.update(rel.encode())
        if f.suffix in {".json", ".txt"} and f.stat().st_size < 2_000_000:
            h.update(f.read_bytes())
        else:
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()
