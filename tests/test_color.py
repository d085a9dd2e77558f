"""The colour-name table names known RGB values right."""
import numpy as np
import pytest

from broden_builder.color import COLOR_NAMES, color_codes


@pytest.mark.parametrize("rgb,name", [
    ((0, 0, 0), "black"), ((255, 255, 255), "white"), ((128, 128, 128), "grey"),
    ((255, 0, 0), "red"), ((0, 255, 0), "green"), ((0, 0, 255), "blue"),
    ((255, 255, 0), "yellow"), ((255, 140, 0), "orange"), ((128, 0, 128), "purple"),
    ((255, 160, 200), "pink"), ((100, 60, 30), "brown"),
])
def test_known_colours(rgb, name):
    img = np.array(rgb, np.uint8).reshape(1, 1, 3)
    code = int(color_codes(img)[0, 0])
    assert COLOR_NAMES[code - 1] == name


def test_codes_are_1_based_and_per_pixel():
    img = np.zeros((2, 3, 3), np.uint8)
    img[1, 2] = (255, 255, 255)
    codes = color_codes(img)
    assert codes.shape == (2, 3)
    assert codes.min() >= 1 and codes.max() <= 11
    assert COLOR_NAMES[codes[0, 0] - 1] == "black" and COLOR_NAMES[codes[1, 2] - 1] == "white"


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="H x W x 3"):
        color_codes(np.zeros((4, 4), np.uint8))
