"""Training datasets: StyleGAN2-ADA's zip/folder format plus ground-truth factors and built-ins.

Semantics follow StyleGAN2-ADA so that configs and snapshots carry over:
- `max_size` keeps a seeded random subset (shuffle with `np.random.RandomState(random_seed)`, keep
  the first `max_size`, sort), `xflip` appends a mirrored copy of every kept image.
- Items are `(uint8 ndarray [C, H, W], float32 label)`. Integer labels become one-hot vectors, list
  labels are returned as float32, and without labels (or `use_labels=False`) the label is a
  zero-width float32 array.

Our extension, for disentanglement work: `dataset.json` may carry `factors` (list of
`[relative_fname, [int, ...]]`), `factor_names`, `factor_sizes` and `procedural` (the built-in
renderer the file was written from). Datasets with factors can draw factor combinations uniformly
from the grid (`sample_factors`) and turn them into observations (`sample_from_factors`): built-ins
and procedural zips render any combination, other files look the combination up among their
images. Mirrored copies (`xflip`) report the factors of the image they were mirrored from.

Built-in names (`dsprites`, `shapes3d`, `digits`) need no file: `BuiltinDataset` renders on the fly.
"""

import contextlib
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import torch

import dnnlib
from training.image_files import (
    IMAGE_READ_ERRORS,
    PNG_HEADER_BYTES,
    channels_for_mode,
    image_to_array,
    is_image_name,
    list_folder,
    png_header,
    read_at,
    resize_square,
    stored_member_offsets,
)

DATASET_JSON = 'dataset.json'


class DatasetError(Exception):
    """A problem with the user's data, stated in one sentence that names the fix."""


def as_random_state(random_state):
    """A numpy RandomState or Generator as given; an int seed (or None) becomes a RandomState."""
    if isinstance(random_state, (np.random.RandomState, np.random.Generator)):
        return random_state
    return np.random.RandomState(random_state)


def _randint(random_state, high, size):
    if isinstance(random_state, np.random.Generator):
        return random_state.integers(0, high, size=size)
    return random_state.randint(0, high, size=size)


def format_factors(names, values):
    return ', '.join(f'{name}={int(value)}' for name, value in zip(names, values))


# ----------------------------------------------------------------------------


class Dataset(torch.utils.data.Dataset):
    """Base class: index bookkeeping, labels and factors. Subclasses implement the `_load_*` hooks."""

    # Subclasses with ground-truth factors set these before calling Dataset.__init__.
    _factor_names = ()
    _factor_sizes = ()

    def __init__(self, name, raw_shape, max_size=None, use_labels=False, xflip=False, random_seed=0):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None
        self._factor_lookup = None

        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    # Hooks for subclasses. ------------------------------------------------

    def _load_raw_image(self, raw_idx):  # -> uint8 [C, H, W]
        raise NotImplementedError

    def _load_raw_images(self, raw_indices):  # -> sequence of uint8 [C, H, W]
        return [self._load_raw_image(int(raw_idx)) for raw_idx in raw_indices]

    def _load_raw_labels(self):  # -> None, int64 [N] or float32 [N, ...]
        raise NotImplementedError

    def _load_raw_factors(self, raw_indices):  # -> int64 [len(raw_indices), F]
        raise NotImplementedError

    def _render_factors(self, factors):  # -> uint8 [N, C, H, W], or None to look them up instead
        return None

    def close(self):
        pass

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None, _factor_lookup=None)

    def __del__(self):
        with contextlib.suppress(OSError, AttributeError, TypeError):  # Interpreter shutdown.
            self.close()

    # Labels. --------------------------------------------------------------

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            labels = np.asarray(labels)
            if labels.shape[0] != self._raw_shape[0]:
                raise DatasetError(f'Dataset {self._name!r} has {labels.shape[0]} labels for '
                                   f'{self._raw_shape[0]} images; give every image exactly one label.')
            if labels.dtype == np.int64:
                if labels.ndim != 1 or (labels.size and labels.min() < 0):
                    raise DatasetError(f'Dataset {self._name!r} has integer labels that are not '
                                       f'non-negative class indices; use 0, 1, 2, ... per image.')
            elif labels.dtype != np.float32:
                labels = labels.astype(np.float32)
            self._raw_labels = labels
        return self._raw_labels

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    # Items. ---------------------------------------------------------------

    def __len__(self):
        return self._raw_idx.size

    def _finish_image(self, image, idx):
        # Sizes are validated when the dataset opens, so a mismatch here is a bug, not a user error.
        assert image.dtype == np.uint8 and list(image.shape) == self.image_shape, (image.dtype, image.shape)
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy()

    def __getitem__(self, idx):
        image = self._load_raw_image(int(self._raw_idx[idx]))
        return self._finish_image(image, idx), self.get_label(idx)

    def __getitems__(self, indices):
        """Batched read (used by DataLoader when batching): built-ins render a batch at once."""
        indices = [int(idx) for idx in indices]
        images = self._load_raw_images(self._raw_idx[indices])
        return [(self._finish_image(image, idx), self.get_label(idx)) for image, idx in zip(images, indices)]

    def get_details(self, idx):
        raw_idx = int(self._raw_idx[idx])
        return dnnlib.EasyDict(
            raw_idx=raw_idx,
            xflip=(int(self._xflip[idx]) != 0),
            raw_label=self._get_raw_labels()[raw_idx].copy(),
            factors=self.get_factors(idx) if self.has_factors else None,
        )

    # Factors. -------------------------------------------------------------

    def _require_factors(self):
        if not self.has_factors:
            raise DatasetError(f'Dataset {self._name!r} has no ground-truth factors; use a built-in '
                               f'dataset or a dataset.json with "factors".')

    def get_factors(self, idx):
        """int64 [F]: ground-truth factor indices of item `idx` (mirrored items: their source's)."""
        self._require_factors()
        return self._load_raw_factors(self._raw_idx[[idx]])[0].copy()

    def sample_factors(self, num, random_state):
        """int64 [num, F] drawn uniformly and independently per factor over the full factor grid."""
        self._require_factors()
        random_state = as_random_state(random_state)
        columns = [_randint(random_state, size, num) for size in self._factor_sizes]
        return np.stack(columns, axis=1).astype(np.int64)

    def _check_factors(self, factors):
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != len(self._factor_sizes) \
                or not np.issubdtype(factors.dtype, np.integer):
            raise DatasetError(f'Expected integer factors of shape [N, {len(self._factor_sizes)}] '
                               f'for dataset {self._name!r}, got {factors.dtype} {list(factors.shape)}.')
        bad = (factors < 0) | (factors >= np.asarray(self._factor_sizes))
        if bad.any():
            row = int(np.nonzero(bad.any(axis=1))[0][0])
            raise DatasetError(f'Factors ({format_factors(self._factor_names, factors[row])}) are out of '
                               f'range for dataset {self._name!r}; sizes are '
                               f'{dict(zip(self._factor_names, self._factor_sizes))}.')
        return factors.astype(np.int64)

    def sample_from_factors(self, factors, random_state=None):
        """uint8 [N, C, H, W] observations with the given factors (int [N, F]).

        Renders when the data is procedural; otherwise looks each combination up among the raw
        images (all of them, regardless of `max_size`), picking one at random when several share it
        (the first by index when `random_state` is None).
        """
        self._require_factors()
        factors = self._check_factors(factors)
        rendered = self._render_factors(factors)
        if rendered is not None:
            return np.asarray(rendered, dtype=np.uint8)
        sorted_codes, order = self._get_factor_lookup()
        codes = np.ravel_multi_index(tuple(factors.T), self._factor_sizes)
        first = np.searchsorted(sorted_codes, codes, side='left')
        end = np.searchsorted(sorted_codes, codes, side='right')
        missing = np.nonzero(first == end)[0]
        if missing.size:
            raise DatasetError(
                f'Dataset {self._name!r} has no image with factors '
                f'({format_factors(self._factor_names, factors[missing[0]])})'
                f'{f" (and {missing.size - 1} more missing combinations)" if missing.size > 1 else ""}; '
                f'it holds {sorted_codes.size} of the {int(np.prod(self._factor_sizes))} combinations, '
                f'so write the full grid with dataset_tool.py or sample only combinations it contains.')
        if random_state is not None:
            first = first + (as_random_state(random_state).random(first.size) * (end - first)).astype(np.int64)
        images = self._load_raw_images(order[first])
        return np.stack([np.asarray(image, dtype=np.uint8) for image in images])

    def _get_factor_lookup(self):
        if self._factor_lookup is None:
            all_factors = self._load_raw_factors(np.arange(self._raw_shape[0]))
            codes = np.ravel_multi_index(tuple(all_factors.T), self._factor_sizes)
            order = np.argsort(codes, kind='stable')
            self._factor_lookup = (codes[order], order)
        return self._factor_lookup

    # Properties, as in StyleGAN2-ADA plus factors. ----------------------------------

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        return self.image_shape[0]

    @property
    def resolution(self):
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(raw_labels.max(initial=-1)) + 1]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(size != 0 for size in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

    @property
    def has_factors(self):
        return len(self._factor_sizes) > 0

    @property
    def factor_names(self):
        return tuple(self._factor_names)

    @property
    def factor_sizes(self):
        return tuple(int(size) for size in self._factor_sizes)


# ----------------------------------------------------------------------------


def _procedural():
    # Imported lazily: the renderers are only needed for built-ins and procedural zips.
    from training import procedural
    return procedural


class BuiltinDataset(Dataset):
    """A built-in procedural dataset ('dsprites', 'shapes3d', 'digits') rendered on the fly."""

    def __init__(self, path, resolution=None, **super_kwargs):
        procedural = _procedural()
        if not procedural.is_builtin(path):
            raise DatasetError(f'{path!r} is not a built-in dataset; choose one of '
                               f'{", ".join(procedural.BUILTIN_NAMES)}.')
        self._path = path
        self._source = procedural.get_builtin(path)
        source = self._source
        if resolution is not None and resolution != source.resolution:
            raise DatasetError(f'Built-in dataset {path!r} is {source.resolution}x{source.resolution}, not '
                               f'{resolution}x{resolution}; write a resized copy with dataset_tool.py '
                               f'--source={path} --resolution={resolution}.')
        if source.has_factors:
            self._factor_names = tuple(source.factor_names)
            self._factor_sizes = tuple(int(size) for size in source.factor_sizes)
        raw_shape = [source.num_images, source.num_channels, source.resolution, source.resolution]
        super().__init__(name=path, raw_shape=raw_shape, **super_kwargs)

    def _get_source(self):
        if self._source is None:
            self._source = _procedural().get_builtin(self._path)
        return self._source

    def __getstate__(self):
        # Workers rebuild the renderer by name instead of unpickling its caches.
        return dict(super().__getstate__(), _source=None)

    def _load_raw_image(self, raw_idx):
        return self._get_source().images(np.array([raw_idx], dtype=np.int64))[0]

    def _load_raw_images(self, raw_indices):
        return self._get_source().images(np.asarray(raw_indices, dtype=np.int64))

    def _load_raw_labels(self):
        return self._get_source().labels(np.arange(self._raw_shape[0], dtype=np.int64))

    def _load_raw_factors(self, raw_indices):
        return np.asarray(self._get_source().index_to_factors(np.asarray(raw_indices, dtype=np.int64)),
                          dtype=np.int64)

    def _render_factors(self, factors):
        return self._get_source().render(factors)


# ----------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """A folder or .zip of equally sized square images, with an optional dataset.json.

    Zip members stored uncompressed (as dataset_tool.py writes them) are read with positioned reads
    from a plain file handle: no per-process re-parsing of the zip directory, no shared file offset
    between DataLoader workers, and safe from several threads. Compressed members go through
    zipfile. Every handle is opened lazily in the process that uses it and dropped when pickled.
    """

    def __init__(self, path, resolution=None, **super_kwargs):
        self._path = path
        self._zipfile = self._raw_file = self._handles_pid = None
        self._raw_factors = None
        if os.path.isdir(path):
            self._type = 'dir'
            all_fnames = list_folder(path)
        elif os.path.isfile(path):
            self._type = 'zip'
            all_fnames = self._get_zipfile().namelist()
        else:
            raise DatasetError(f'Dataset path {path!r} does not exist; pass a folder or .zip of images.')
        self._image_fnames = sorted(fname for fname in all_fnames if is_image_name(fname))
        if not self._image_fnames:
            raise DatasetError(f'No image files found in {path!r}; create the dataset with dataset_tool.py.')
        if self._type == 'zip':
            self._member_offsets, self._member_sizes = self._locate_stored_members()
        self._metadata = self._load_metadata()

        width, height, channels = self._check_image_sizes()
        if width != height or width & (width - 1) != 0:
            raise DatasetError(f'Images in {path!r} are {width}x{height}; training needs square images '
                               f'with a power-of-two side, so rewrite them with dataset_tool.py '
                               f'--resolution=R (and --transform=center-crop if not square).')
        if resolution is not None and resolution != width:
            raise DatasetError(f'Images in {path!r} are {width}x{height}, not {resolution}x{resolution}; '
                               f'drop the resolution option or rewrite them with dataset_tool.py '
                               f'--resolution={resolution}.')
        self._file_labels = self._parse_labels() if self._metadata.get('labels') is not None else None
        if self._metadata.get('factors') is not None:
            self._set_factors()
        # The per-image lists are parsed into arrays: keep worker pickles small.
        self._metadata = {key: value for key, value in self._metadata.items() if key not in ('labels', 'factors')}
        self.close()
        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        super().__init__(name=name, raw_shape=[len(self._image_fnames), channels, height, width], **super_kwargs)

    # File access. ---------------------------------------------------------

    def _own_handles(self):
        # Handles inherited through fork belong to the parent: forget them, never close them.
        if self._handles_pid != os.getpid():
            self._zipfile = self._raw_file = None
            self._handles_pid = os.getpid()

    def _get_zipfile(self):
        self._own_handles()
        if self._zipfile is None:
            try:
                self._zipfile = zipfile.ZipFile(self._path)
            except (zipfile.BadZipFile, OSError) as error:
                raise DatasetError(f'{self._path!r} is not a readable zip file ({error}); recreate it '
                                   f'with dataset_tool.py.') from None
        return self._zipfile

    def _get_raw_file(self):
        self._own_handles()
        if self._raw_file is None:
            self._raw_file = open(self._path, 'rb')  # noqa: SIM115 -- lives as long as the dataset.
        return self._raw_file

    def close(self):
        if getattr(self, '_handles_pid', None) == os.getpid():
            for handle in (self._zipfile, self._raw_file):
                if handle is not None:
                    handle.close()
        self._zipfile = self._raw_file = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None, _raw_file=None, _handles_pid=None)

    def _locate_stored_members(self):
        """Data offset and size of each uncompressed image member (offset -1: read via zipfile)."""
        return stored_member_offsets(self._get_zipfile(), self._get_raw_file(), self._image_fnames)

    def _read_image_bytes(self, raw_idx, limit=-1):
        fname = self._image_fnames[raw_idx]
        if self._type == 'dir':
            with open(os.path.join(self._path, fname), 'rb') as file:
                return file.read(limit)
        offset, size = int(self._member_offsets[raw_idx]), int(self._member_sizes[raw_idx])
        if offset < 0:
            with self._get_zipfile().open(fname) as file:
                return file.read(limit)
        return read_at(self._get_raw_file(), size if limit < 0 else min(size, limit), offset)

    def _read_image(self, raw_idx, header_only=False):
        """uint8 [H, W, C]; or ((width, height), channels) reading only the header when possible."""
        try:
            if header_only:
                header = png_header(self._read_image_bytes(raw_idx, PNG_HEADER_BYTES))
                if header is not None:
                    return header
            with PIL.Image.open(io.BytesIO(self._read_image_bytes(raw_idx))) as image:
                return (image.size, channels_for_mode(image.mode)) if header_only else image_to_array(image)
        except DatasetError:
            raise
        except IMAGE_READ_ERRORS as error:
            raise DatasetError(f'Cannot read image {self._image_fnames[raw_idx]!r} in {self._path!r} ({error}); '
                               f'fix or remove it, or recreate the dataset with dataset_tool.py.') from None

    def _check_image_sizes(self):
        # Headers only (~1 us per stored PNG): turns a crash deep inside training into a clear error.
        first_size, first_channels = self._read_image(0, header_only=True)
        for raw_idx in range(1, len(self._image_fnames)):
            size, channels = self._read_image(raw_idx, header_only=True)
            if size != first_size or channels != first_channels:
                raise DatasetError(
                    f'Images in {self._path!r} differ in size or colour ({self._image_fnames[0]!r} is '
                    f'{first_size[0]}x{first_size[1]} with {first_channels} channel(s), '
                    f'{self._image_fnames[raw_idx]!r} is {size[0]}x{size[1]} with {channels}); '
                    f'convert them with dataset_tool.py --resolution=R.')
        return first_size[0], first_size[1], first_channels

    def _load_metadata(self):
        if self._type == 'dir' and not os.path.isfile(os.path.join(self._path, DATASET_JSON)):
            return {}
        if self._type == 'zip' and DATASET_JSON not in self._get_zipfile().namelist():
            return {}
        try:
            if self._type == 'dir':
                with open(os.path.join(self._path, DATASET_JSON), 'rb') as file:
                    metadata = json.load(file)
            else:
                metadata = json.loads(self._get_zipfile().read(DATASET_JSON))
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise DatasetError(f'Cannot parse {DATASET_JSON} in {self._path!r} ({error}); fix or delete it.') from None
        if not isinstance(metadata, dict):
            raise DatasetError(f'{DATASET_JSON} in {self._path!r} must hold a JSON object; fix or delete it.')
        return metadata

    def _per_image(self, key):
        entries = self._metadata.get(key)
        try:
            table = {str(fname).replace('\\', '/'): value for fname, value in entries}
        except (TypeError, ValueError):
            raise DatasetError(f'"{key}" in {DATASET_JSON} of {self._path!r} must be a list of '
                               f'[filename, value] pairs; rewrite it with dataset_tool.py.') from None
        missing = [fname for fname in self._image_fnames if fname not in table]
        if missing:
            raise DatasetError(f'"{key}" in {DATASET_JSON} of {self._path!r} has no entry for {missing[0]!r} '
                               f'({len(missing)} images without one); give every image a value.')
        return [table[fname] for fname in self._image_fnames]

    def _set_factors(self):
        factors = np.asarray(self._per_image('factors'))
        if factors.ndim != 2 or not np.issubdtype(factors.dtype, np.integer) or (factors < 0).any():
            raise DatasetError(f'"factors" in {DATASET_JSON} of {self._path!r} must give every image the '
                               f'same number of non-negative integer factor indices.')
        sizes = self._metadata.get('factor_sizes') or [int(size) + 1 for size in factors.max(axis=0)]
        names = self._metadata.get('factor_names') or [f'factor{i}' for i in range(len(sizes))]
        if len(names) != len(sizes) or factors.shape[1] != len(sizes) or (factors >= np.asarray(sizes)).any():
            raise DatasetError(f'{DATASET_JSON} in {self._path!r} has inconsistent "factors", "factor_names" '
                               f'and "factor_sizes"; rewrite it with dataset_tool.py.')
        self._raw_factors = factors.astype(np.int64)
        self._factor_names = tuple(str(name) for name in names)
        self._factor_sizes = tuple(int(size) for size in sizes)

    # Hooks. ---------------------------------------------------------------

    def _load_raw_image(self, raw_idx):
        return self._read_image(raw_idx).transpose(2, 0, 1)

    def _load_raw_labels(self):
        return self._file_labels

    def _parse_labels(self):
        labels = np.asarray(self._per_image('labels'))
        if labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
            return labels.astype(np.int64)
        if labels.ndim in (1, 2) and np.issubdtype(labels.dtype, np.number):
            return labels.astype({1: np.int64, 2: np.float32}[labels.ndim])
        raise DatasetError(f'"labels" in {DATASET_JSON} of {self._path!r} must be one integer or one list '
                           f'of numbers of equal length per image.')

    def _load_raw_factors(self, raw_indices):
        return self._raw_factors[np.asarray(raw_indices, dtype=np.int64)]

    def _render_factors(self, factors):
        source_name = self._metadata.get('procedural')
        procedural = _procedural() if source_name else None
        if procedural is None or not procedural.is_builtin(source_name):
            return None
        source = procedural.get_builtin(source_name)
        if tuple(source.factor_sizes) != self.factor_sizes or source.num_channels != self.num_channels:
            return None
        images = np.asarray(source.render(factors), dtype=np.uint8)
        if source.resolution != self.resolution:
            images = np.stack([resize_square(image.transpose(1, 2, 0), self.resolution).transpose(2, 0, 1)
                               for image in images])
        return images


# ----------------------------------------------------------------------------


def dataset_kwargs(data, **overrides):
    """Map a `--data` value (built-in name, folder or .zip) to constructor kwargs for a Dataset.

    An exact built-in name wins over a folder of the same name; write `./dsprites` for the folder.
    """
    data = os.fspath(data)
    procedural = _procedural()
    if procedural.is_builtin(data):
        return dnnlib.EasyDict(class_name='training.dataset.BuiltinDataset', path=data, **overrides)
    builtins = ', '.join(procedural.BUILTIN_NAMES)
    if not os.path.exists(data):
        raise DatasetError(f'--data={data!r} does not exist; pass a folder or .zip of images, or a built-in '
                           f'dataset ({builtins}).')
    if not os.path.isdir(data) and data.lower().endswith('.zip') and not zipfile.is_zipfile(data):
        raise DatasetError(f'--data={data!r} is named .zip but is not a zip archive (damaged, cut short or '
                           f'renamed); rebuild it with dataset_tool.py.')
    if not (os.path.isdir(data) or zipfile.is_zipfile(data)):
        raise DatasetError(f'--data={data!r} is neither a folder nor a .zip file; pass a folder or .zip of '
                           f'images (dataset_tool.py creates one), or a built-in dataset ({builtins}).')
    return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, **overrides)


def open_dataset(data, **overrides):
    """Construct the Dataset for a `--data` value; `overrides` go to the constructor."""
    kwargs = dataset_kwargs(data, **overrides)
    return dnnlib.util.construct_class_by_name(**kwargs)
