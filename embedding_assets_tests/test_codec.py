import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q


def _unit(rng, n, d):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_int8_round_trip_keeps_direction():
    rng = np.random.default_rng(1)
    v = _unit(rng, 500, 384)
    cal = q.calibrate_int8(v)
    back = q.dequantize_int8(q.quantize_int8(v, cal), cal)
    cos = np.sum(back * v, axis=1) / np.linalg.norm(back, axis=1)
    assert cos.min() > 0.999


def test_int8_codes_do_not_depend_on_the_batch():
    rng = np.random.default_rng(2)
    v = _unit(rng, 100, 32)
    cal = q.calibrate_int8(v)
    whole = q.quantize_int8(v, cal)
    halves = np.concatenate([q.quantize_int8(v[:37], cal), q.quantize_int8(v[37:], cal)])
    np.testing.assert_array_equal(whole, halves)


def test_values_outside_the_calibration_are_clipped():
    cal = q.Int8Calibration(np.zeros(2, np.float32), np.ones(2, np.float32))
    codes = q.quantize_int8(np.array([[-5.0, 5.0]], np.float32), cal)
    assert codes.tolist() == [[-128, 127]]


def test_calibration_bytes_round_trip():
    cal = q.calibrate_int8(_unit(np.random.default_rng(3), 10, 8))
    back = q.Int8Calibration.from_bytes(cal.to_bytes())
    np.testing.assert_array_equal(back.lo, cal.lo)
    np.testing.assert_array_equal(back.hi, cal.hi)
    with pytest.raises(ValueError):
        q.Int8Calibration.from_bytes(b"\x00" * 12)


def test_binary_round_trip_is_unit_sign_vector():
    v = np.array([[0.5, -0.1, 0.0, 2.0, -3.0, 1.0, 1.0, -1.0, 0.2]], np.float32)
    packed = q.quantize_binary(v)
    assert packed.shape == (1, 2)
    back = q.dequantize_binary(packed[0], 9)
    assert np.allclose(np.linalg.norm(back), 1.0)
    assert (np.sign(back) == np.where(v[0] > 0, 1, -1)).all()


@given(
    st.sampled_from([q.INT8, q.BINARY]),
    st.integers(1, 1024),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
)
def test_record_round_trip(codec_name, dim, version_id, computed_at, chash, source_ms):
    size = codec.payload_size(codec_name, dim)
    payload = np.arange(size, dtype=np.uint8).astype(np.int8 if codec_name == q.INT8 else np.uint8)
    [value] = codec.encode_records(
        payload[None, :],
        codec=codec_name,
        dimension=dim,
        version_id=version_id,
        computed_at=computed_at,
        content_hashes=np.array([chash], dtype=np.uint64),
        source_ms=np.array([source_ms], dtype=np.int64),
    )
    assert len(value) == codec.HEADER_SIZE + size
    header = codec.decode_header(value)
    assert header == codec.RecordHeader(codec_name, dim, version_id, computed_at, chash, source_ms)
    np.testing.assert_array_equal(codec.decode_payload(value, header), payload)


def test_int8_record_of_384_dims_is_412_bytes():
    [value] = codec.encode_records(
        np.zeros((1, 384), np.int8),
        codec=q.INT8,
        dimension=384,
        version_id=1,
        computed_at=2,
        content_hashes=np.array([3], np.uint64),
        source_ms=np.array([4], np.int64),
    )
    assert len(value) == 412


def test_corrupt_values_are_rejected():
    [value] = codec.encode_records(
        np.zeros((1, 8), np.int8),
        codec=q.INT8,
        dimension=8,
        version_id=1,
        computed_at=2,
        content_hashes=np.array([3], np.uint64),
        source_ms=np.array([4], np.int64),
    )
    for bad in (value[:10], value[:-1], b"\x09" + value[1:], b'{"emb": [0.1]}'):
        with pytest.raises(codec.CodecError):
            codec.decode_header(bad)
    with pytest.raises(codec.CodecError):
        codec.encode_records(
            np.zeros((1, 7), np.int8),
            codec=q.INT8,
            dimension=8,
            version_id=1,
            computed_at=2,
            content_hashes=np.array([3], np.uint64),
            source_ms=np.array([4], np.int64),
        )
