"""Write a training dataset in the StyleGAN2-ADA layout (zip or folder) from images or a built-in.

The output holds `00000/img00000000.png`, `00000/img00000001.png`, ... (1000 images per folder)
and a `dataset.json` with `labels` (kept from the source's dataset.json, or the built-in's class
labels) and, for ground-truth data, `factors`, `factor_names`, `factor_sizes` and `procedural`
(the built-in renderer, so training.dataset can render any factor combination later).
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile

import click
import numpy as np
import PIL.Image

from dnnlib import cli
from dnnlib.cli import os_errors_as_user_errors
from dnnlib.progress import Progress
from training.dataset import DATASET_JSON, DatasetError
from training.image_files import (
    IMAGE_READ_ERRORS,
    channels_for_mode,
    image_to_array,
    is_image_name,
    list_folder,
    resize_square,
)

IMAGES_PER_FOLDER = 1000
BATCH_SIZE = 1000  # Built-ins render this many images per call.


def archive_fname(index):
    return f'{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png'


def encode_png(array):
    """uint8 [H, W, C] (C = 1 or 3) -> PNG bytes; grayscale stays one channel."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format='png')
    return buffer.getvalue()


def is_power_of_two(value):
    return value >= 1 and value & (value - 1) == 0


# ----------------------------------------------------------------------------
# Sources.


class BuiltinSource:
    """A procedural dataset from training.procedural; images come in batches of index order."""

    def __init__(self, name):
        from training import procedural
        self.name = name
        self.renderer = procedural.get_builtin(name)
        self.num_images = int(self.renderer.num_images)


class FileSource:
    """A folder or zip of images, with an optional dataset.json (labels, factors)."""

    def __init__(self, path):
        self.path = path
        self.zip = None
        if os.path.isdir(path):
            all_fnames = list_folder(path)
            where = f'--source folder {path!r}'
        else:
            if not (path.lower().endswith('.zip') or zipfile.is_zipfile(path)):
                raise click.ClickException(f'--source {path!r} is a file but not a .zip archive; pass a folder '
                                           f'or .zip of images, or a built-in dataset name.')
            try:
                self.zip = zipfile.ZipFile(path)
                all_fnames = [info.filename for info in self.zip.infolist() if not info.is_dir()]
            except (zipfile.BadZipFile, OSError) as error:
                raise click.ClickException(f'--source {path!r} is not a readable zip file ({error}); recreate '
                                           f'or re-download it.') from None
            where = f'--source zip {path!r}'
        self.fnames = sorted(fname for fname in all_fnames if is_image_name(fname))
        if not all_fnames:
            raise click.ClickException(f'{where} is empty; put images (.png, .jpg, ...) in it.')
        if not self.fnames:
            raise click.ClickException(f'{where} contains {len(all_fnames)} file(s) but no images; supported '
                                       f'image types are .png, .jpg, .jpeg, .bmp, .webp and the other '
                                       f'formats Pillow reads.')
        self.num_images = len(self.fnames)
        self.metadata = self._read_metadata(all_fnames)

    def _open(self, fname):
        if self.zip is not None:
            return self.zip.open(fname, 'r')
        return open(os.path.join(self.path, fname), 'rb')

    def _read_metadata(self, all_fnames):
        if DATASET_JSON not in all_fnames:
            return {}
        try:
            with self._open(DATASET_JSON) as file:
                metadata = json.load(file)
            if not isinstance(metadata, dict):
                raise TypeError('expected a JSON object')
        except (OSError, ValueError, TypeError, zipfile.BadZipFile) as error:
            raise click.ClickException(f'Cannot parse {DATASET_JSON} in --source {self.path!r} ({error}); fix '
                                       f'or delete it.') from None
        return metadata

    def per_image(self, key, fnames):
        """The dataset.json entries `key` for `fnames`, or None when the key is absent."""
        entries = self.metadata.get(key)
        if entries is None:
            return None
        try:
            table = {str(fname).replace('\\', '/'): value for fname, value in entries}
        except (TypeError, ValueError):
            raise click.ClickException(f'"{key}" in {DATASET_JSON} of --source {self.path!r} must be a list of '
                                       f'[filename, value] pairs.') from None
        missing = [fname for fname in fnames if fname not in table]
        if missing:
            raise click.ClickException(f'"{key}" in {DATASET_JSON} of --source {self.path!r} has no entry for '
                                       f'{missing[0]!r} ({len(missing)} images without one); give every image '
                                       f'a value or remove "{key}".')
        return [table[fname] for fname in fnames]

    def _fail(self, fname, error):
        return click.ClickException(f'Cannot read image {fname!r} in --source {self.path!r} ({error}); fix or '
                                    f'remove it.')

    def probe(self, fname):
        """(width, height, channels) from the file header only."""
        try:
            with self._open(fname) as file, PIL.Image.open(file) as image:
                return image.size[0], image.size[1], channels_for_mode(image.mode)
        except IMAGE_READ_ERRORS as error:
            raise self._fail(fname, error) from None

    def read(self, fname):
        """uint8 [H, W, C]."""
        try:
            with self._open(fname) as file:
                data = file.read()
            with PIL.Image.open(io.BytesIO(data)) as image:
                return image_to_array(image)
        except IMAGE_READ_ERRORS as error:
            raise self._fail(fname, error) from None


def open_source(source):
    from training import procedural
    if procedural.is_builtin(source):
        return BuiltinSource(source)
    if not os.path.exists(source):
        raise click.ClickException(f'--source {source!r} does not exist; pass a folder or .zip of images, or a '
                                   f'built-in dataset ({", ".join(procedural.BUILTIN_NAMES)}).')
    return FileSource(source)


# ----------------------------------------------------------------------------
# Transforms for user images: [H, W, C] -> square [resolution, resolution, C].


def center_crop(array):
    height, width = array.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return array[top:top + side, left:left + side]


def center_crop_wide(array, resolution):
    """Crop the centre 2:1 region, scale it to resolution x resolution/2 and letterbox it in black."""
    height, width = array.shape[:2]
    crop_width, crop_height = min(width, 2 * height), min(height, width // 2)
    crop_height = max(crop_height, 1)
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    crop = array[top:top + crop_height, left:left + crop_width]
    image = PIL.Image.fromarray(crop[:, :, 0] if crop.shape[2] == 1 else crop)
    band = image_to_array(image.resize((resolution, resolution // 2), PIL.Image.Resampling.LANCZOS))
    canvas = np.zeros([resolution, resolution, array.shape[2]], dtype=np.uint8)
    offset = (resolution - resolution // 2) // 2
    canvas[offset:offset + resolution // 2] = band
    return canvas


def side_after_transform(width, height, transform):
    if transform == 'center-crop':
        return min(width, height)
    if transform == 'center-crop-wide':
        return min(width, 2 * height)
    return width


def apply_transform(array, transform, resolution, channels):
    if array.shape[2] != channels:  # A grayscale image in a colour dataset.
        array = np.repeat(array, channels, axis=2)
    if transform == 'center-crop-wide':
        return center_crop_wide(array, resolution)
    if transform == 'center-crop':
        array = center_crop(array)
    return resize_square(array, resolution)


def plan_user_images(source, fnames, resolution, transform):
    """Read headers, validate sizes, and return (resolution, channels) for the output."""
    sizes = {}
    channel_counts = set()
    with Progress(len(fnames), desc='scanning', unit='img') as progress:
        for fname in fnames:
            width, height, channels = source.probe(fname)
            sizes.setdefault((width, height), fname)
            channel_counts.add(channels)
            progress.update(1)
    for (width, height), fname in sizes.items():
        if width != height and transform is None:
            raise click.ClickException(f'Image {fname!r} is {width}x{height}, not square; pass '
                                       f'--transform=center-crop or --transform=center-crop-wide.')
    if resolution is None:
        sides = {side_after_transform(width, height, transform): fname for (width, height), fname in sizes.items()}
        if len(sides) > 1:
            (a_width, a_height), a_fname = next(iter(sizes.items()))
            (b_width, b_height), b_fname = list(sizes.items())[-1]
            raise click.ClickException(f'Images differ in size ({a_fname!r} is {a_width}x{a_height}, {b_fname!r} '
                                       f'is {b_width}x{b_height}); pass --resolution=R to resize them all.')
        side = next(iter(sides))
        if not is_power_of_two(side) or side < 4:
            suggestion = max(4, 1 << int(np.log2(max(side, 1))))
            raise click.ClickException(f'Images give {side}x{side} outputs, but training needs a power-of-two '
                                       f'side; pass --resolution (e.g. --resolution={suggestion}).')
        resolution = side
    return resolution, max(channel_counts)


# ----------------------------------------------------------------------------
# Destinations: everything goes to a temp file/folder next to --dest, renamed into place at the end.


def _default_file_mode(mode):
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


class ZipDest:
    def __init__(self, dest, parent):
        fd, self.temp_path = tempfile.mkstemp(prefix=f'.{os.path.basename(dest)}.', suffix='.tmp', dir=parent)
        self.dest = dest
        self.file = os.fdopen(fd, 'wb')
        self.zip = zipfile.ZipFile(self.file, 'w', compression=zipfile.ZIP_STORED)

    def write(self, fname, data):
        self.zip.writestr(fname, data)

    def commit(self):
        self.zip.close()
        self.file.close()
        os.chmod(self.temp_path, _default_file_mode(0o666))
        os.replace(self.temp_path, self.dest)

    def abort(self):
        with contextlib.suppress(OSError, ValueError, zipfile.BadZipFile):  # Half-written archive.
            self.zip.close()
        self.file.close()
        if os.path.exists(self.temp_path):
            os.remove(self.temp_path)


class FolderDest:
    def __init__(self, dest, parent):
        self.temp_path = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.path.normpath(dest))}.', suffix='.tmp',
                                          dir=parent)
        self.dest = dest

    def write(self, fname, data):
        path = os.path.join(self.temp_path, fname)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as file:
            file.write(data)

    def commit(self):
        os.chmod(self.temp_path, _default_file_mode(0o777))
        if os.path.isdir(self.dest):
            os.rmdir(self.dest)  # Checked empty up front; rename cannot replace a directory everywhere.
        os.rename(self.temp_path, self.dest)

    def abort(self):
        shutil.rmtree(self.temp_path, ignore_errors=True)


def check_dest(dest):
    is_zip = dest.lower().endswith('.zip')
    if is_zip and os.path.isdir(dest):
        raise click.ClickException(f'--dest {dest!r} is a folder; give a new .zip path or a folder without .zip.')
    if not is_zip and os.path.exists(dest):
        if not os.path.isdir(dest):
            raise click.ClickException(f'--dest {dest!r} exists and is a file; give a .zip path or a new folder.')
        if os.listdir(dest):
            raise click.ClickException(f'--dest folder {dest!r} already exists and is not empty; choose a new '
                                       f'--dest or delete it first.')
    return is_zip


def open_dest(dest, is_zip):
    parent = os.path.dirname(os.path.abspath(os.path.normpath(dest)))
    created = []
    probe = parent
    while not os.path.isdir(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        writer = ZipDest(dest, parent) if is_zip else FolderDest(dest, parent)
    except OSError as err:
        for path in created:  # the folders made for it, deepest first
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise click.ClickException(f'cannot write --dest={dest}: {err.strerror or err}; choose a writable place.') \
            from None
    writer.created_dirs = created  # Removed again if the run fails, so nothing is left behind.
    return writer


# ----------------------------------------------------------------------------


def select_indices(num_images, max_images, shuffle, seed):
    """Indices to write: all, the first max_images, or (shuffle) a seeded random subset in index order."""
    if max_images is None or max_images >= num_images:
        return np.arange(num_images, dtype=np.int64)
    if shuffle:
        return np.sort(np.random.RandomState(seed).permutation(num_images)[:max_images]).astype(np.int64)
    return np.arange(max_images, dtype=np.int64)


def write_builtin(source, indices, resolution, dest):
    renderer = source.renderer
    resolution = resolution or renderer.resolution
    labels, factors = [], []
    with Progress(len(indices), desc='dataset_tool', unit='img') as progress:
        for start in range(0, len(indices), BATCH_SIZE):
            batch = indices[start:start + BATCH_SIZE]
            images = np.asarray(renderer.images(batch), dtype=np.uint8)
            for offset, image in enumerate(images):
                array = resize_square(image.transpose(1, 2, 0), resolution)
                dest.write(archive_fname(start + offset), encode_png(array))
            batch_labels = renderer.labels(batch)
            if batch_labels is not None:
                labels += [int(label) for label in batch_labels]
            if renderer.has_factors:
                factors += np.asarray(renderer.index_to_factors(batch)).tolist()
            progress.update(len(batch))
    fnames = [archive_fname(i) for i in range(len(indices))]
    metadata = {'labels': [[fname, label] for fname, label in zip(fnames, labels)] if labels else None}
    if renderer.has_factors:
        metadata.update(factors=[[fname, [int(v) for v in row]] for fname, row in zip(fnames, factors)],
                        factor_names=list(renderer.factor_names),
                        factor_sizes=[int(size) for size in renderer.factor_sizes],
                        procedural=source.name)
    return metadata


def write_user_images(source, indices, resolution, transform, dest):
    fnames = [source.fnames[i] for i in indices]
    labels = source.per_image('labels', fnames)
    factors = source.per_image('factors', fnames)
    resolution, channels = plan_user_images(source, fnames, resolution, transform)
    with Progress(len(fnames), desc='dataset_tool', unit='img') as progress:
        for index, fname in enumerate(fnames):
            array = apply_transform(source.read(fname), transform, resolution, channels)
            dest.write(archive_fname(index), encode_png(array))
            progress.update(1)
    out_fnames = [archive_fname(i) for i in range(len(fnames))]
    metadata = {'labels': [[f, label] for f, label in zip(out_fnames, labels)] if labels is not None else None}
    if factors is not None:
        metadata['factors'] = [[f, row] for f, row in zip(out_fnames, factors)]
        # A letterboxed image no longer matches its renderer, so factors are then only looked up.
        keys = ('factor_names', 'factor_sizes') + (('procedural',) if transform != 'center-crop-wide' else ())
        for key in keys:
            if source.metadata.get(key) is not None:
                metadata[key] = source.metadata[key]
    return metadata


def convert_dataset(source, dest, max_images=None, resolution=None, transform=None, shuffle=False, seed=0):
    """Write `source` to `dest`; raises click.ClickException on bad input and leaves `dest` untouched."""
    if max_images is not None and max_images < 1:
        raise click.ClickException(f'--max-images must be at least 1, got {max_images}.')
    if resolution is not None and (not is_power_of_two(resolution) or resolution < 4):
        raise click.ClickException(f'--resolution must be a power of two of at least 4 (e.g. 64, 128, 256), '
                                   f'got {resolution}.')
    is_zip = check_dest(dest)
    opened = open_source(source)
    try:
        indices = select_indices(opened.num_images, max_images, shuffle, seed)
        writer = open_dest(dest, is_zip)
        try:
            if isinstance(opened, BuiltinSource):
                metadata = write_builtin(opened, indices, resolution, writer)
            else:
                metadata = write_user_images(opened, indices, resolution, transform, writer)
            writer.write(DATASET_JSON, json.dumps(metadata).encode('utf-8'))
            writer.commit()
        except BaseException:
            writer.abort()
            for path in writer.created_dirs:
                if os.path.isdir(path) and not os.listdir(path):
                    os.rmdir(path)
            raise
    except DatasetError as error:
        raise click.ClickException(str(error)) from None
    finally:
        if getattr(opened, 'zip', None) is not None:
            opened.zip.close()
    return len(indices)


@click.command(cls=cli.Command)
@click.option('--source', required=True, metavar='PATH|NAME',
              help='Folder or .zip of images (png, jpg, ...; optional dataset.json with labels), or a built-in '
                   'dataset: dsprites, shapes3d, digits.')
@click.option('--dest', required=True, metavar='PATH',
              help='Output .zip file, or a new (or empty) folder. A .zip is replaced only when the run succeeds.')
@click.option('--max-images', type=int, default=None, metavar='N',
              help='Write at most N images: the first N in file-name (or built-in index) order, or a random '
                   'subset with --shuffle.  [default: all]')
@click.option('--shuffle', is_flag=True, help='With --max-images: take a seeded random subset (kept in index '
                                              'order) instead of the first N.')
@click.option('--seed', type=int, default=0, show_default=True, help='Random seed for --shuffle.')
@click.option('--resolution', type=int, default=None, metavar='R',
              help='Output side in pixels, a power of two; images are resized with Lanczos.  '
                   '[default: the images\' own size when they all share one square power-of-two size]')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']), default=None,
              help='How to make non-square user images square: center-crop takes the central square; '
                   'center-crop-wide takes the central 2:1 band and letterboxes it in black.')
@os_errors_as_user_errors
def main(source, dest, max_images, shuffle, seed, resolution, transform):
    """Convert images or a built-in dataset to the StyleGAN2-ADA dataset format.

    \b
    Examples:
    # dSprites (737,280 images, factors in dataset.json), or a 2,000 image random subset:
    python dataset_tool.py --source=dsprites --dest=datasets/dsprites.zip
    python dataset_tool.py --source=dsprites --dest=datasets/dsprites-2k.zip --max-images=2000 --shuffle

    \b
    # scikit-learn digits (32x32 grayscale) with their class labels 0-9:
    python dataset_tool.py --source=digits --dest=datasets/digits.zip

    \b
    # A folder of photos of any size, center-cropped and resized to 256x256:
    python dataset_tool.py --source=~/photos --dest=datasets/photos256.zip --resolution=256 --transform=center-crop

    \b
    # Resize an existing dataset zip (labels and factors are kept) into a folder:
    python dataset_tool.py --source=datasets/dsprites.zip --dest=datasets/dsprites128 --resolution=128
    """
    num_written = convert_dataset(os.path.expanduser(source), os.path.expanduser(dest), max_images=max_images,
                                  resolution=resolution, transform=transform, shuffle=shuffle, seed=seed)
    click.echo(f'Wrote {num_written} images to {dest}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
