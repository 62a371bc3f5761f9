"""A field set's dask stack is built on first pixel access, not at open (issue 11 item 3: ``info`` stays quick)."""

import copy
import pickle

import numpy as np

from cytoreview.io import fields as fields_module
from cytoreview.io import open_image

from .conftest import write_fields


def test_open_builds_no_graph_and_pixels_match(tmp_path):
    write_fields(tmp_path / "c", 3)
    image = open_image(tmp_path / "c")
    level = image.levels[0]
    assert isinstance(level, fields_module.LazyStack)
    assert image.shape == (3, 60, 96, 3) and level.dtype == np.uint8 and level.ndim == 4 and len(level) == 3
    assert level._array is None  # shape, dtype and the description came from the headers alone
    expected = fields_module.decode_field(tmp_path / "c" / "field_001.jpg")
    np.testing.assert_array_equal(image.read_plane(field=1), expected)
    np.testing.assert_array_equal(np.asarray(level)[1], expected)
    assert level.chunks == ((1, 1, 1), (60,), (96,), (3,))  # everything else is the dask array's
    assert level[:, None].shape == (3, 1, 60, 96, 3)


def test_lazy_stack_copies_and_pickles_without_recursion(tmp_path):
    write_fields(tmp_path / "c", 2)
    level = open_image(tmp_path / "c").levels[0]
    for clone in (copy.copy(level), copy.deepcopy(level)):
        assert clone.shape == level.shape and clone._array is None
        np.testing.assert_array_equal(np.asarray(clone[1]), np.asarray(level[1]))
    half_made = fields_module.LazyStack.__new__(fields_module.LazyStack)
    assert getattr(half_made, "chunks", None) is None  # an AttributeError, not a RecursionError
    clone = pickle.loads(pickle.dumps(fields_module.LazyStack((2, 4, 4, 3), _white)))
    assert np.asarray(clone).shape == (2, 4, 4, 3) and (np.asarray(clone) == 255).all()


def _white():
    import dask.array as da

    return da.full((2, 4, 4, 3), 255, dtype=np.uint8, chunks=(1, 4, 4, 3))
