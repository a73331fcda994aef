"""int8 and binary codes with calibration fixed per version: lib/quantization.py."""

import numpy as np
import pytest

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


def test_dequantize_serves_both_codecs():
    rng = np.random.default_rng(3)
    v = _unit(rng, 20, 16)
    cal = q.calibrate_int8(v)
    for codes, name in ((q.quantize_int8(v, cal), q.INT8), (q.quantize_binary(v), q.BINARY)):
        back = q.dequantize(name, codes.view(np.uint8), cal, 16)
        assert back.shape == (20, 16) and (back * v).sum(axis=1).min() > 0.5
    with pytest.raises(ValueError, match="calibration"):
        q.dequantize(q.INT8, q.quantize_int8(v, cal), None, 16)
