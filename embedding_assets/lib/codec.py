"""Binary value of one feature-store entry. The layout is documented in docs/codec.md.

Little-endian header of 28 bytes, then the vector payload:

    offset size field
    0      1    format       record format, 1
    1      1    codec        1 = int8, 2 = binary (sign bits)
    2      2    dimension    vector dimension (u16)
    4      4    version_id   u32 fingerprint of the version tag
    8      4    computed_at  unix seconds (u32) when the state it was computed from was read
                             (server clock; the write time where that is not known)
    12     8    content_hash xxh3-64 of the embedded text under the version tag
    20     8    source_ms    the source document's modified_at, unix milliseconds (i64);
                             Lua in feature_store.py reads it at this offset
    28     ...  payload      int8: dimension bytes; binary: ceil(dimension / 8) bytes
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedding_assets.lib import quantization as q

FORMAT = 1
CODEC_IDS = {q.INT8: 1, q.BINARY: 2}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
_HEADER = struct.Struct("<BBHIIQq")
HEADER_SIZE = _HEADER.size
HEADER_DTYPE = np.dtype(
    [
        ("format", "u1"),
        ("codec", "u1"),
        ("dimension", "<u2"),
        ("version_id", "<u4"),
        ("computed_at", "<u4"),
        ("content_hash", "<u8"),
        ("source_ms", "<i8"),
    ]
)


class CodecError(ValueError):
    """A stored value that is not a record of this format."""


@dataclass(frozen=True)
class RecordHeader:
    codec: str
    dimension: int
    version_id: int
    computed_at: int
    content_hash: int
    source_ms: int


def payload_size(codec: str, dimension: int) -> int:
    return dimension if codec == q.INT8 else (dimension + 7) // 8


def encode_records(
    codes: np.ndarray,
    *,
    codec: str,
    dimension: int,
    version_id: int,
    computed_at: int | Sequence[int],
    content_hashes: np.ndarray,
    source_ms: np.ndarray,
) -> list[bytes]:
    """Encode a batch: row ``i`` of ``codes`` with ``content_hashes[i]`` and ``source_ms[i]``."""
    codec_id = CODEC_IDS[codec]
    size = payload_size(codec, dimension)
    if codes.shape[1] != size:
        raise CodecError(f"payload of {codes.shape[1]} bytes, expected {size}")
    raw = np.ascontiguousarray(codes).view(np.uint8)
    times = [computed_at] * len(raw) if isinstance(computed_at, int) else list(computed_at)
    return [
        _HEADER.pack(FORMAT, codec_id, dimension, version_id, int(t), int(h), int(m)) + raw[i].tobytes()
        for i, (t, h, m) in enumerate(zip(times, content_hashes.tolist(), source_ms.tolist(), strict=True))
    ]


def parse_header(prefix: bytes) -> RecordHeader:
    """The header from the first HEADER_SIZE bytes of a value (the payload may be absent)."""
    if len(prefix) < HEADER_SIZE:
        raise CodecError(f"value of {len(prefix)} bytes is shorter than the header")
    fmt, codec_id, dim, version_id, computed_at, chash, source_ms = _HEADER.unpack_from(prefix)
    if fmt != FORMAT or codec_id not in CODEC_NAMES:
        raise CodecError(f"unknown record format {fmt} / codec {codec_id}")
    return RecordHeader(CODEC_NAMES[codec_id], dim, version_id, computed_at, chash, source_ms)


def decode_header(value: bytes) -> RecordHeader:
    header = parse_header(value)
    if len(value) != HEADER_SIZE + payload_size(header.codec, header.dimension):
        raise CodecError(f"value of {len(value)} bytes does not fit {header.codec} x {header.dimension}")
    return header


def decode_payload(value: bytes, header: RecordHeader) -> np.ndarray:
    dtype = np.int8 if header.codec == q.INT8 else np.uint8
    return np.frombuffer(value, dtype=dtype, offset=HEADER_SIZE)


def decode_many(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Records of one codec and dimension at once: ``(headers, payloads)``.

    ``headers`` is a structured array (HEADER_DTYPE), ``payloads`` an ``(n, size)`` uint8 matrix:
    a hundred records decode in one numpy pass instead of a hundred.
    """
    length = len(values[0])
    if any(len(v) != length for v in values):
        raise CodecError("records of different sizes in one batch")
    rows = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), length)
    headers = np.ascontiguousarray(rows[:, :HEADER_SIZE]).view(HEADER_DTYPE).ravel()
    first = parse_header(values[0])
    if (
        (headers["format"] != FORMAT).any()
        or (headers["codec"] != CODEC_IDS[first.codec]).any()
        or (headers["dimension"] != first.dimension).any()
        or length != HEADER_SIZE + payload_size(first.codec, first.dimension)
    ):
        raise CodecError("records of mixed or unknown format in one batch")
    return headers, rows[:, HEADER_SIZE:]
