"""Image files for datasets and dataset_tool.py: decoding, resizing, PNG headers, names, zip members.

Shared by `training.dataset` (reading a folder or zip while training) and `dataset_tool.py` (writing
one), so a folder read directly and the zip written from it contain the same arrays.
"""

import functools
import os
import struct
import zipfile

import numpy as np
import PIL.Image

# What a damaged file can raise while being read and decoded (zipfile raises NotImplementedError for
# unsupported compression and RuntimeError for encrypted members).
IMAGE_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, PIL.Image.DecompressionBombError,
                     NotImplementedError, RuntimeError)


_GRAYSCALE_MODES = ('1', 'L', 'LA', 'La', 'I', 'F')


def channels_for_mode(mode):
    """Channels an image of PIL `mode` has after `image_to_array`: 1 for grayscale, else 3."""
    return 1 if (mode in _GRAYSCALE_MODES or mode.startswith('I;16')) else 3


def image_to_array(image):
    """PIL image -> uint8 [H, W, C] with C = 1 (grayscale) or 3 (colour; alpha is dropped)."""
    mode = image.mode
    if channels_for_mode(mode) == 3:
        array = np.asarray(image if mode == 'RGB' else image.convert('RGB'))
    elif mode in ('I', 'F') or mode.startswith('I;16'):
        # 16-bit grayscale PNGs open as 'I;16' or 'I'; rescale instead of clipping to white.
        values = np.asarray(image).astype(np.float64)
        if mode.startswith('I;16') or values.max(initial=0) > 255:
            values = values / 257.0
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:
        array = np.asarray(image if mode == 'L' else image.convert('L'))
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    return np.ascontiguousarray(array, dtype=np.uint8)


def resize_square(array, resolution):
    """uint8 [H, W, C] -> uint8 [resolution, resolution, C] with Lanczos resampling."""
    if array.shape[0] == resolution and array.shape[1] == resolution:
        return array
    image = PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    image = image.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    return image_to_array(image)


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_HEADER_BYTES = 26


def png_header(data):
    """((width, height), channels) from the first 26 bytes of a PNG file, or None for other data."""
    if len(data) < PNG_HEADER_BYTES or data[:8] != _PNG_SIGNATURE or data[12:16] != b'IHDR':
        return None
    width, height, _bit_depth, colour_type = struct.unpack('>IIBB', data[16:PNG_HEADER_BYTES])
    return (width, height), (1 if colour_type in (0, 4) else 3)  # PNG colour types 0/4: gray (+alpha).


@functools.cache
def image_extensions():
    """Lower-case file extensions PIL can open ('.png', '.jpg', ...)."""
    PIL.Image.init()
    return frozenset(ext.lower() for ext in PIL.Image.EXTENSION)


def is_image_name(fname):
    return os.path.splitext(fname)[1].lower() in image_extensions()


def list_folder(path):
    """Every file below folder `path`, as relative names with '/' separators."""
    return [os.path.relpath(os.path.join(root, fname), start=path).replace(os.sep, '/')
            for root, _dirs, files in os.walk(path) for fname in files]


def read_at(file, size, offset):
    """Positioned read that leaves the file offset alone, so threads and forked workers can share it."""
    if hasattr(os, 'pread'):
        return os.pread(file.fileno(), size, offset)
    file.seek(offset)  # Windows: DataLoader workers are spawned, so each has its own handle.
    return file.read(size)


def stored_member_offsets(archive, raw_file, fnames):
    """Where each member of zip `archive` (open as binary `raw_file` too) keeps its bytes, if stored.

    Returns int64 arrays (offsets, sizes): the offset of the member's data in the file and its size,
    so uncompressed images can be read with one `read_at`; offset -1 for compressed or encrypted
    members, which must go through `zipfile`.
    """
    offsets = np.full(len(fnames), -1, dtype=np.int64)
    sizes = np.zeros(len(fnames), dtype=np.int64)
    for index, fname in enumerate(fnames):
        info = archive.getinfo(fname)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # 0x1: encrypted.
            continue
        local_header = read_at(raw_file, 30, info.header_offset)
        if len(local_header) == 30 and local_header[:4] == b'PK\x03\x04':
            name_length, extra_length = struct.unpack('<HH', local_header[26:30])
            offsets[index] = info.header_offset + 30 + name_length + extra_length
            sizes[index] = info.compress_size
    return offsets, sizes
