"""Vector quantization with calibration fixed per version.

Unlike sentence-transformers' ``quantize_embeddings`` without ``ranges``, codes here never
depend on the batch: the int8 ranges are computed once for a version, stored beside it,
and passed to every later call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT8 = "int8"
BINARY = "binary"
QUANTIZATIONS = (INT8, BINARY)


@dataclass(frozen=True)
class Int8Calibration:
    """Per-dimension value range mapped onto the 256 int8 codes."""

    lo: np.ndarray
    hi: np.ndarray

    @property
    def dimension(self) -> int:
        return int(self.lo.shape[0])

    @property
    def step(self) -> np.ndarray:
        return np.maximum(self.hi - self.lo, 1e-9) / 255.0

    def to_bytes(self) -> bytes:
        return np.concatenate([self.lo, self.hi]).astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Int8Calibration:
        values = np.frombuffer(raw, dtype="<f4")
        if values.size % 2:
            raise ValueError("calibration blob has an odd number of floats")
        half = values.size // 2
        return cls(values[:half].copy(), values[half:].copy())


def calibrate_int8(vectors: np.ndarray, margin: float = 0.1) -> Int8Calibration:
    """Ranges from observed min/max, widened by ``margin`` of the range on each side.

    Values outside the range later are clipped; the margin keeps that rare.
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError("calibration needs a non-empty 2-D array of vectors")
    lo = vectors.min(axis=0).astype(np.float32)
    hi = vectors.max(axis=0).astype(np.float32)
    pad = (hi - lo) * margin + 1e-6
    return Int8Calibration(lo - pad, hi + pad)


def quantize_int8(vectors: np.ndarray, calibration: Int8Calibration) -> np.ndarray:
    scaled = np.rint((vectors - calibration.lo) / calibration.step) - 128.0
    return np.clip(scaled, -128, 127).astype(np.int8)


def dequantize_int8(codes: np.ndarray, calibration: Int8Calibration) -> np.ndarray:
    values = calibration.lo + (codes.astype(np.float32) + 128.0) * calibration.step
    return values.astype(np.float32)


def quantize_binary(vectors: np.ndarray) -> np.ndarray:
    """Sign bits packed 8 per byte (dimension padded to a multiple of 8)."""
    return np.packbits(vectors > 0, axis=-1)


def dequantize_binary(packed: np.ndarray, dimension: int) -> np.ndarray:
    """Unit vectors of +-1/sqrt(d): the best a sign code can say about direction."""
    bits = np.unpackbits(packed, axis=-1, count=dimension).astype(np.float32)
    return (bits * 2.0 - 1.0) / np.float32(np.sqrt(dimension))


def dequantize(
    codec_name: str, codes: np.ndarray, calibration: Int8Calibration | None, dimension: int
) -> np.ndarray:
    """float32 vectors from the codes of one codec (a row of codes or a matrix of rows)."""
    if codec_name == INT8:
        if calibration is None:
            raise ValueError("int8 codes need the version's calibration")
        return dequantize_int8(codes.view(np.int8), calibration)
    return dequantize_binary(codes.view(np.uint8), dimension)
