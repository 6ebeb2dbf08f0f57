"""Specification of the built-in datasets (training/procedural): dSprites, 3D Shapes look-alike, digits."""

import numpy as np
import pytest

from training.procedural import BUILTIN_NAMES, get_builtin, is_builtin
from training.procedural import dsprites as dsprites_module
from training.procedural.base import contact_sheet
from training.procedural.dsprites import render_sprites


@pytest.fixture(scope='module')
def dsprites():
    return get_builtin('dsprites')


@pytest.fixture(scope='module')
def shapes3d():
    return get_builtin('shapes3d')


@pytest.fixture(scope='module')
def digits():
    return get_builtin('digits')


def centre_of_mass(mask):
    rows, columns = np.nonzero(mask)
    return rows.mean(), columns.mean()


# ---------------------------------------------------------------------------------------- registry

def test_registry_names_and_cached_instances():
    assert BUILTIN_NAMES == ('dsprites', 'shapes3d', 'digits')
    assert all(is_builtin(name) for name in BUILTIN_NAMES)
    assert not is_builtin('mnist') and not is_builtin(None) and not is_builtin('DSprites')
    assert get_builtin('dsprites') is get_builtin('dsprites')


def test_unknown_builtin_name_lists_the_valid_names():
    with pytest.raises(ValueError, match='dsprites, shapes3d, digits'):
        get_builtin('mnist')


# ---------------------------------------------------------------------------------------- dSprites

def test_dsprites_factor_grid_matches_the_original(dsprites):
    assert dsprites.factor_names == ('shape', 'scale', 'orientation', 'pos_x', 'pos_y')
    assert dsprites.factor_sizes == (3, 6, 40, 32, 32)
    assert dsprites.num_images == 737280
    assert (dsprites.resolution, dsprites.num_channels, dsprites.num_classes) == (64, 1, 0)
    assert dsprites.has_factors
    np.testing.assert_allclose(dsprites.factor_values[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert dsprites.factor_values[2][0] == 0 and dsprites.factor_values[2][-1] == 2 * np.pi
    np.testing.assert_allclose(np.diff(dsprites.factor_values[3]), 1 / 31)
    assert dsprites.labels([0, 1]) is None


def test_dsprites_index_factor_round_trip(dsprites):
    rng = np.random.RandomState(0)
    index = np.concatenate([[0, dsprites.num_images - 1], rng.randint(0, dsprites.num_images, 500)])
    factors = dsprites.index_to_factors(index)
    assert factors.dtype == np.int64 and factors.shape == (502, 5)
    np.testing.assert_array_equal(factors[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(factors[1], [2, 5, 39, 31, 31])
    np.testing.assert_array_equal(dsprites.factors_to_index(factors), index)


def test_dsprites_last_factor_varies_fastest(dsprites):
    factors = dsprites.index_to_factors([1, 32, 32 * 32, 32 * 32 * 40, 32 * 32 * 40 * 6])
    np.testing.assert_array_equal(factors, [[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0],
                                            [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]])


def test_dsprites_images_are_binary_uint8(dsprites):
    images = dsprites.images(np.random.RandomState(1).randint(0, dsprites.num_images, 200))
    assert images.dtype == np.uint8 and images.shape == (200, 1, 64, 64)
    assert set(np.unique(images)) == {0, 255}
    assert np.all(images.reshape(200, -1).max(axis=1) == 255)   # every image shows a sprite


def test_dsprites_render_of_factors_equals_images(dsprites):
    index = np.random.RandomState(2).randint(0, dsprites.num_images, 64)
    np.testing.assert_array_equal(dsprites.render(dsprites.index_to_factors(index)), dsprites.images(index))
    # The single-image forms agree with the batched ones.
    np.testing.assert_array_equal(dsprites.images(int(index[0])), dsprites.images(index[:1]))


def test_dsprites_scale1_square_covers_the_expected_area():
    side_px = dsprites_module.SQUARE_SIDE * 64
    mask = render_sprites(0, 1.0, 0.0, 0.5, 0.5)[0, 0] > 0
    # Centred on a pixel corner, a side covers the pixel centres within +-side/2 of it.
    pixels_per_side = 2 * int(np.floor(side_px / 2 + 0.5))
    assert mask.sum() == pixels_per_side ** 2
    assert abs(mask.sum() - side_px ** 2) / side_px ** 2 < 0.05
    rows, columns = np.nonzero(mask)
    assert rows.min() == 32 - pixels_per_side // 2 and columns.max() == 31 + pixels_per_side // 2


def test_dsprites_scale_changes_area_quadratically(dsprites):
    areas = [(dsprites.render([[0, scale, 0, 16, 16]]) > 0).sum() for scale in range(6)]
    assert all(np.diff(areas) > 0)
    assert abs(areas[5] / areas[0] - 4.0) < 0.4     # scale 1 vs 0.5


def test_dsprites_mean_intensity_matches_the_original(dsprites):
    # Sprites never leave the frame, so one position gives the exact mean over the full set.
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(6), np.arange(40), [10], [20], indexing='ij'), -1)
    mean = (dsprites.render(grid.reshape(-1, 5)) > 0).mean()
    assert abs(mean - 0.042494) < 0.001


def test_dsprites_pos_x_moves_right_and_pos_y_moves_down(dsprites):
    for shape in range(3):
        along_x = dsprites.render([[shape, 3, 7, x, 12] for x in range(32)])[:, 0] > 0
        along_y = dsprites.render([[shape, 3, 7, 12, y] for y in range(32)])[:, 0] > 0
        x_centres = np.array([centre_of_mass(mask) for mask in along_x])
        y_centres = np.array([centre_of_mass(mask) for mask in along_y])
        assert np.all(np.diff(x_centres[:, 1]) > 0.5)      # columns increase, ~1.17 px per step
        assert np.ptp(x_centres[:, 0]) < 0.5                # rows stay put
        assert np.all(np.diff(y_centres[:, 0]) > 0.5)
        assert np.ptp(y_centres[:, 1]) < 0.5
        span = x_centres[-1, 1] - x_centres[0, 1]
        assert abs(span - dsprites_module.POSITION_SPAN * 64) < 1.5


def test_dsprites_scale1_sprites_never_leave_the_frame(dsprites):
    for shape in range(3):
        reference = (dsprites.render([[shape, 5, o, 15, 15] for o in range(40)]) > 0).sum(axis=(1, 2, 3))
        for x, y in [(0, 0), (31, 0), (0, 31), (31, 31)]:
            corner = (dsprites.render([[shape, 5, o, x, y] for o in range(40)]) > 0).sum(axis=(1, 2, 3))
            # A clipped sprite would lose a quarter or more of its area; the tolerance only allows
            # for the pixel grid (an axis-aligned 19.7 px side covers 19 or 20 pixel centres).
            np.testing.assert_allclose(corner, reference, rtol=0.12)


def test_dsprites_orientation_0_and_2pi_render_identically(dsprites):
    first = dsprites.render([[shape, scale, 0, 5, 20] for shape in range(3) for scale in range(6)])
    last = dsprites.render([[shape, scale, 39, 5, 20] for shape in range(3) for scale in range(6)])
    np.testing.assert_array_equal(first, last)
    assert not np.array_equal(first, dsprites.render([[s, c, 1, 5, 20] for s in range(3) for c in range(6)]))


def test_dsprites_square_quarter_turn_gives_the_same_mask(dsprites):
    # Exactly 90 degrees (continuous renderer) maps the square onto itself...
    np.testing.assert_array_equal(render_sprites(0, 1.0, np.pi / 2, 0.5, 0.5), render_sprites(0, 1.0, 0.0, 0.5, 0.5))
    # ... and on the grid, index 10 is 10 * 360/39 = 92.3 degrees, i.e. the 2.3 degree square.
    on_grid = dsprites.render([[0, 5, 10, 16, 16]])
    angle = dsprites.factor_values[2][10] - np.pi / 2
    centre = dsprites.factor_values[3][16]
    np.testing.assert_array_equal(on_grid, render_sprites(0, 1.0, angle, centre, centre))
    # The ellipse has only a half-turn symmetry: a quarter turn changes it.
    assert not np.array_equal(render_sprites(1, 1.0, np.pi / 2, 0.5, 0.5), render_sprites(1, 1.0, 0.0, 0.5, 0.5))


def test_dsprites_heart_differs_from_square_and_ellipse(dsprites):
    square, ellipse, heart = dsprites.render([[shape, 5, 0, 16, 16] for shape in range(3)])[:, 0] > 0
    assert (heart != square).sum() > 0.15 * square.sum()
    assert (heart != ellipse).sum() > 0.15 * ellipse.sum()
    # Centred on the image centre, square and ellipse are mirror-symmetric top to bottom; the heart
    # is not (point down, lobes up: more of it lies in the upper half).
    square, ellipse, heart = render_sprites([0, 1, 2], 1.0, 0.0, 0.5, 0.5)[:, 0] > 0
    np.testing.assert_array_equal(square, square[::-1])
    np.testing.assert_array_equal(ellipse, ellipse[::-1])
    assert heart[:32].sum() > 1.2 * heart[32:].sum()


def test_dsprites_orientation_turns_counter_clockwise():
    # An ellipse (long axis horizontal) turned by +45 degrees leans like '/': its upper part is on the right.
    mask = render_sprites(1, 1.0, np.pi / 4, 0.5, 0.5)[0, 0] > 0
    upper, lower = mask[:32], mask[32:]
    assert centre_of_mass(upper)[1] > 32 > centre_of_mass(lower)[1]


def test_dsprites_sample_factors_is_uniform_over_the_grid(dsprites):
    samples = dsprites.sample_factors(6000, np.random.RandomState(3))
    assert samples.shape == (6000, 5) and samples.dtype == np.int64
    for column, size in enumerate(dsprites.factor_sizes):
        counts = np.bincount(samples[:, column], minlength=size)
        assert counts.size == size and counts.min() > 0.6 * 6000 / size
    np.testing.assert_array_equal(dsprites.sample_factors(10, 5), dsprites.sample_factors(10, 5))
    assert dsprites.sample_factors(7, np.random.default_rng(0)).shape == (7, 5)


# ------------------------------------------------------------------------------------ 3D Shapes

SHAPES3D_BASE = [2, 5, 7, 3, 0, 4]   # floor, wall, object hue, scale, shape (cube), orientation


def test_shapes3d_factor_grid(shapes3d):
    assert shapes3d.factor_names == ('floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation')
    assert shapes3d.factor_sizes == (10, 10, 10, 8, 4, 15)
    assert shapes3d.num_images == 480000
    assert (shapes3d.resolution, shapes3d.num_channels, shapes3d.num_classes) == (64, 3, 0)
    np.testing.assert_allclose(shapes3d.factor_values[3], np.linspace(0.75, 1.25, 8))
    np.testing.assert_allclose(shapes3d.factor_values[5], np.linspace(-30, 30, 15))
    np.testing.assert_allclose(shapes3d.factor_values[0], np.arange(10) / 10)


def test_shapes3d_index_factor_round_trip(shapes3d):
    index = np.concatenate([[0, 1, 15, shapes3d.num_images - 1],
                            np.random.RandomState(4).randint(0, shapes3d.num_images, 300)])
    factors = shapes3d.index_to_factors(index)
    np.testing.assert_array_equal(factors[:4], [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1],
                                                [0, 0, 0, 0, 1, 0], [9, 9, 9, 7, 3, 14]])
    np.testing.assert_array_equal(shapes3d.factors_to_index(factors), index)


def test_shapes3d_images_are_rgb_uint8_and_match_render(shapes3d):
    index = np.random.RandomState(5).randint(0, shapes3d.num_images, 50)
    images = shapes3d.images(index)
    assert images.dtype == np.uint8 and images.shape == (50, 3, 64, 64)
    assert images.max() > 200 and images.std() > 20
    np.testing.assert_array_equal(images, shapes3d.render(shapes3d.index_to_factors(index)))


def test_shapes3d_layout_floor_below_wall_object_in_the_middle(shapes3d):
    floor, wall, body = shapes3d.region_masks([SHAPES3D_BASE])[0]
    assert np.all(floor | wall | body)                     # every pixel shows something
    assert floor[-1].all() and wall[0].all()               # floor at the bottom, wall at the top
    assert centre_of_mass(floor)[0] > 32 > centre_of_mass(wall)[0]
    row, column = centre_of_mass(body)
    assert 16 < row < 48 and abs(column - 31.5) < 4


def test_shapes3d_hue_values_give_distinct_colours(shapes3d):
    images = shapes3d.render([[hue, 0, 0, 3, 0, 7] for hue in range(10)])
    floor_pixel = images[:, :, 60, 5].astype(int)        # bottom-left corner is always floor
    distances = np.abs(floor_pixel[:, None] - floor_pixel[None]).sum(-1)
    assert distances[~np.eye(10, dtype=bool)].min() > 30


def _assert_change_confined(shapes3d, first, second, region_names):
    images = shapes3d.render([first, second]).astype(int)
    changed = np.any(images[0] != images[1], axis=0)
    masks = shapes3d.region_masks([first, second])
    allowed = np.zeros_like(changed)
    for name in region_names:
        region = shapes3d.region_names.index(name)
        allowed |= masks[0, region] | masks[1, region]
    assert changed.any(), f'{first} -> {second} changed no pixel'
    assert not (changed & ~allowed).any(), f'{first} -> {second} changed pixels outside {region_names}'


@pytest.mark.parametrize('factor, region', [(0, 'floor'), (1, 'wall'), (2, 'object')])
def test_shapes3d_hue_changes_only_its_region(shapes3d, factor, region):
    for shape in range(4):
        for value in range(10):
            first = list(SHAPES3D_BASE)
            first[4] = shape
            second = list(first)
            second[factor] = value
            if value != first[factor]:
                _assert_change_confined(shapes3d, first, second, [region])


@pytest.mark.parametrize('factor', [3, 4, 5])
def test_shapes3d_scale_shape_orientation_change_only_object_pixels(shapes3d, factor):
    # Every neighbouring pair of values, for every shape: also checks that a sphere's orientation
    # is visible (the body-fixed pattern) and that no two values render the same image.
    for shape in range(4):
        for value in range(shapes3d.factor_sizes[factor] - 1):
            first = list(SHAPES3D_BASE)
            first[4] = shape
            first[factor] = value
            second = list(first)
            second[factor] = value + 1
            _assert_change_confined(shapes3d, first, second, ['object'])


def test_shapes3d_shapes_have_different_silhouettes(shapes3d):
    masks = shapes3d.region_masks([[0, 0, 0, 7, shape, 7] for shape in range(4)])[:, 2]
    for a in range(4):
        for b in range(a + 1, 4):
            assert (masks[a] != masks[b]).sum() > 30, (a, b)


# ---------------------------------------------------------------------------------------- digits

def test_digits_images_and_labels(digits):
    index = np.arange(digits.num_images)
    images, labels = digits.images(index), digits.labels(index)
    assert digits.num_images == 1797 and len(digits) == 1797
    assert images.shape == (1797, 1, 32, 32) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert not digits.has_factors and digits.num_classes == 10 and digits.factor_sizes == ()


def test_digits_upsampling_preserves_the_original_8x8_content(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    np.testing.assert_array_equal(digits.labels(np.arange(1797)), bunch.target)
    pooled = digits.images(np.arange(100))[:, 0].astype(float).reshape(100, 8, 4, 8, 4).mean(axis=(2, 4))
    original = bunch.images[:100] * 255 / 16
    correlation = np.corrcoef(pooled.ravel(), original.ravel())[0, 1]
    assert correlation > 0.95


def test_digits_have_no_factors(digits):
    with pytest.raises(ValueError, match='no ground-truth factors'):
        digits.index_to_factors([0])


# ------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize('name', BUILTIN_NAMES)
def test_out_of_range_index_raises_value_error(name):
    source = get_builtin(name)
    for bad in (-1, source.num_images, [0, source.num_images + 5]):
        with pytest.raises(ValueError, match='out of range'):
            source.images(bad)
    with pytest.raises(ValueError, match='integers'):
        source.images([0.5])
    with pytest.raises(ValueError, match='1-D'):
        source.images(np.zeros([2, 2], dtype=int))


@pytest.mark.parametrize('name', ['dsprites', 'shapes3d'])
def test_out_of_range_or_misshapen_factors_raise_value_error(name):
    source = get_builtin(name)
    good = np.zeros([1, len(source.factor_sizes)], dtype=np.int64)
    for column, size in enumerate(source.factor_sizes):
        for bad in (-1, size):
            factors = good.copy()
            factors[0, column] = bad
            with pytest.raises(ValueError, match=source.factor_names[column]):
                source.render(factors)
            with pytest.raises(ValueError, match='out of range'):
                source.factors_to_index(factors)
    with pytest.raises(ValueError, match='shape'):
        source.render(np.zeros([1, len(source.factor_sizes) + 1], dtype=np.int64))


def test_contact_sheet_tiles_row_major():
    images = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1) * np.ones([6, 1, 2, 2], np.uint8)
    sheet = contact_sheet(images, columns=4, gap=1, gap_value=99)
    assert sheet.shape == (2 * 3 - 1, 4 * 3 - 1, 1)
    tile_tops_lefts = [(0, 0), (0, 3), (0, 6), (0, 9), (3, 0), (3, 3)]
    for value, (top, left) in enumerate(tile_tops_lefts):
        assert np.all(sheet[top:top + 2, left:left + 2, 0] == value)
    assert np.all(sheet[2, :, 0] == 99) and np.all(sheet[:, 2, 0] == 99)
    assert np.all(sheet[3:, 6:, 0] == 99)     # the missing 7th and 8th tiles show the gap value


@pytest.mark.parametrize('name', BUILTIN_NAMES)
def test_sources_survive_pickling(name):
    # DataLoader workers started with 'spawn' receive the dataset pickled.
    import pickle

    source = get_builtin(name)
    index = np.array([0, 7, source.num_images - 1])
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy.images(index), source.images(index))
