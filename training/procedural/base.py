"""Common interface of the built-in, file-less datasets (dSprites, 3D Shapes look-alike, digits).

An `ImageSource` is a fixed, ordered collection of `num_images` uint8 images [C, R, R]. Sources
with ground-truth factors enumerate the full factor grid exactly once in C order (the LAST factor
varies fastest, as in the original dSprites and 3dshapes files), so an image index and a factor
tuple are interchangeable through `index_to_factors` / `factors_to_index`.

Index and factor arguments accept python ints, lists and numpy integer arrays; a scalar index is
treated as a batch of one. Anything out of range raises ValueError with a sentence saying which
values are allowed, because these arrays usually come straight from user options or samplers.
"""

import os
import tempfile

import numpy as np


class ImageSource:
    """Base class of every built-in dataset. Subclasses set the attributes and implement `images`
    (plain image lists) or `render` (factor datasets; `images` then goes through the factor grid)."""

    name = ''
    resolution = 0
    num_channels = 0
    num_images = 0
    has_factors = False
    factor_names = ()
    factor_sizes = ()
    num_classes = 0
    factor_values = ()   # subclasses with factors set a list: one float array per factor

    # ------------------------------------------------------------------ index handling

    def _check_index(self, index):
        """Returns `index` as an int64 array [N]; ValueError when it is not integral or not in range."""
        array = np.asarray(index)
        if array.ndim == 0:
            array = array.reshape(1)
        if array.ndim != 1:
            raise ValueError(f'{self.name}: image index must be an int or a 1-D array of ints, '
                             f'got an array of shape {array.shape}.')
        if array.size == 0:
            return np.zeros([0], dtype=np.int64)
        if not _holds_integers(array):
            raise ValueError(f'{self.name}: image index must be integers, got dtype {array.dtype}.')
        array = array.astype(np.int64)
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= self.num_images:
            bad = low if low < 0 else high
            raise ValueError(f'{self.name}: image index {bad} is out of range; valid indices are '
                             f'0 .. {self.num_images - 1}.')
        return array

    def _check_factors(self, factors):
        """Returns `factors` as an int64 array [N, F]; ValueError on a wrong shape or an out-of-range value."""
        self._require_factors()
        array = np.asarray(factors)
        num_factors = len(self.factor_sizes)
        if array.ndim == 1 and array.shape[0] == num_factors:
            array = array.reshape(1, num_factors)
        if array.ndim != 2 or array.shape[1] != num_factors:
            raise ValueError(f'{self.name}: factors must have shape [N, {num_factors}] '
                             f'({", ".join(self.factor_names)}), got shape {array.shape}.')
        if array.size and not _holds_integers(array):
            raise ValueError(f'{self.name}: factors are integer class indices, got dtype {array.dtype}.')
        array = array.astype(np.int64)
        for column, (name, size) in enumerate(zip(self.factor_names, self.factor_sizes)):
            values = array[:, column]
            if values.size and (values.min() < 0 or values.max() >= size):
                bad = values.min() if values.min() < 0 else values.max()
                raise ValueError(f'{self.name}: factor {name!r} = {int(bad)} is out of range; '
                                 f'valid values are 0 .. {size - 1}.')
        return array

    def _require_factors(self):
        if not self.has_factors:
            raise ValueError(f'{self.name} has no ground-truth factors; use a factor dataset '
                             f'such as dsprites or shapes3d.')

    # ------------------------------------------------------------------ public API

    def __len__(self):
        return self.num_images

    def __repr__(self):
        return (f'{type(self).__name__}(name={self.name!r}, num_images={self.num_images}, '
                f'shape=[{self.num_channels}, {self.resolution}, {self.resolution}])')

    def images(self, index):
        """uint8 [N, C, R, R] for an int array [N]."""
        index = self._check_index(index)
        return self.render(self.index_to_factors(index))

    def labels(self, index):
        """int64 [N] class labels, or None when the dataset has no classes."""
        self._check_index(index)

    def index_to_factors(self, index):
        """int64 [N, F] factor class indices for image indices [N] (last factor fastest)."""
        self._require_factors()
        index = self._check_index(index)
        return np.stack(np.unravel_index(index, self.factor_sizes), axis=1).astype(np.int64)

    def factors_to_index(self, factors):
        """int64 [N] image indices for factor class indices [N, F]."""
        factors = self._check_factors(factors)
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes).astype(np.int64)

    def render(self, factors):
        """uint8 [N, C, R, R] for factor class indices [N, F]."""
        raise NotImplementedError(f'{type(self).__name__} does not implement render().')

    def sample_factors(self, num, random_state):
        """Factor indices [num, F] drawn uniformly over the grid.

        `random_state` is a numpy RandomState, a numpy Generator, or an int seed.
        """
        self._require_factors()
        rng = as_random_state(random_state)
        columns = [_randint(rng, size, int(num)) for size in self.factor_sizes]
        return np.stack(columns, axis=1).astype(np.int64) if columns else np.zeros([int(num), 0], np.int64)

    def factor_values_of(self, factors):
        """float64 [N, F] physical values (e.g. scale 0.5..1) for factor class indices [N, F]."""
        factors = self._check_factors(factors)
        return np.stack([np.asarray(values, dtype=np.float64)[factors[:, i]]
                         for i, values in enumerate(self.factor_values)], axis=1)


def _holds_integers(array):
    """Integer dtype, or floats that are all whole numbers (e.g. factors read back from JSON)."""
    if np.issubdtype(array.dtype, np.integer):
        return True
    return bool(np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)))


def as_random_state(random_state):
    """Accepts a RandomState, a Generator or an int seed (None means fresh entropy)."""
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        return random_state
    return np.random.RandomState(random_state)


def _randint(rng, high, size):
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, high, size=size)
    return rng.randint(0, high, size=size)


def contact_sheet(images, columns, gap=0, gap_value=128):
    """Tiles uint8 images [N, C, R, R] into one uint8 array [H, W, C] (row-major), with `gap`
    pixels of `gap_value` between tiles so that touching content stays readable."""
    images = np.asarray(images)
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    cell_height, cell_width = height + gap, width + gap
    sheet = np.full([rows * cell_height - gap, columns * cell_width - gap, channels], gap_value,
                    dtype=images.dtype)
    for index in range(count):
        top, left = (index // columns) * cell_height, (index % columns) * cell_width
        sheet[top:top + height, left:left + width] = images[index].transpose(1, 2, 0)
    return sheet


def save_contact_sheet(source, path, rows=8, columns=8, seed=0, upscale=2, gap=2):
    """Writes a PNG grid of random images of `source` (atomically: temp file + rename)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    index = rng.choice(source.num_images, size=rows * columns, replace=False)
    sheet = contact_sheet(source.images(index), columns, gap=gap)
    if sheet.shape[2] == 1:
        image = Image.fromarray(sheet[:, :, 0], 'L')
    else:
        image = Image.fromarray(sheet, 'RGB')
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(suffix='.png', dir=directory)
    try:
        with os.fdopen(handle, 'wb') as file:
            image.save(file, format='PNG')
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
    return path
