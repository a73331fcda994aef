import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q


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
