"""The probe batch a compiled model is checked on is cached beside the libraries: the same rows."""

from __future__ import annotations

import numpy as np

from shared.ml.artifacts import cached_probe, probe_features


def test_the_cached_probe_is_the_probe(tmp_path):
    first = cached_probe("tip", tmp_path)
    assert len(list(tmp_path.glob("probe-request-*.npy"))) == 1
    np.testing.assert_array_equal(first, probe_features("tip"))
    np.testing.assert_array_equal(cached_probe("cost", tmp_path), first)  # request models share one
    np.testing.assert_array_equal(cached_probe("dynamic_duration", tmp_path), probe_features("dynamic_duration"))
    assert len(list(tmp_path.glob("probe-*.npy"))) == 2


def test_a_damaged_cached_probe_is_made_again(tmp_path):
    cached_probe("tip", tmp_path)
    (path,) = tmp_path.glob("probe-request-*.npy")
    path.write_bytes(b"not numpy")
    np.testing.assert_array_equal(cached_probe("tip", tmp_path), probe_features("tip"))
