"""Records as ``tfds.data_source`` gives them (bytes, int64, arrays of bytes), for the stand-in sources tests pass to
``tfds.testing.mock_data(as_data_source_fn=...)``."""

import numpy as np


def as_tfds(value):
    if isinstance(value, dict):
        return {k: as_tfds(v) for k, v in value.items()}
    if isinstance(value, list):
        return np.array([as_tfds(v) for v in value], dtype=object)
    return value.encode() if isinstance(value, str) else np.int64(value)
