import numpy as np
import pytest

from tasks.utils.images import LINE_HEIGHT, side_by_side


def test_tiles_side_by_side_under_their_captions():
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((20, 10, 3), np.uint8)
    blue[..., 2] = 255
    plain = side_by_side([red, blue], gap=3)
    assert plain.shape == (20, 30 + 3 + 10, 3)
    assert (plain[:, 30:33] == 255).all()  # the white gap
    assert np.array_equal(plain[:, :30], red) and np.array_equal(plain[:, 33:], blue)

    captioned = side_by_side([red, blue], ["two\nlines", "a caption far wider than its tile"], gap=3)
    band = 2 * LINE_HEIGHT + 2
    assert captioned.shape == (band + 20, 43, 3) and np.array_equal(captioned[band:], plain)
    assert (captioned[:band, :30] < 128).any()  # text was drawn in the first caption
    assert (captioned[:band, 30:33] == 255).all()  # ... and the second one's stayed within its tile


def test_mismatched_inputs_are_named():
    with pytest.raises(ValueError, match="height"):
        side_by_side([np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2, 3), np.uint8)])
    with pytest.raises(ValueError, match="captions"):
        side_by_side([np.zeros((2, 2, 3), np.uint8)], ["a", "b"])
