"""scikit-learn's handwritten digits as a small labelled image set (no download: the data ships
inside sklearn).

1 797 grey-scale images of the digits 0-9 (UCI optical recognition set), originally 8x8 with
values 0..16. We rescale the values to 0..255 and upsample to 32x32 with PIL's bicubic filter
(clipped back to 0..255 and rounded), which keeps the strokes smooth enough for convolutional
networks whose smallest resolution is 4x4 after three down-samplings. No ground-truth factors;
`labels` returns the digit class.
"""

import threading

import numpy as np

from training.procedural.base import ImageSource

RESOLUTION = 32


class Digits(ImageSource):
    """scikit-learn's load_digits, upsampled to 32x32, uint8 [N, 1, 32, 32], labels 0..9."""

    def __init__(self):
        self.name = 'digits'
        self.resolution = RESOLUTION
        self.num_channels = 1
        self.num_images = 1797
        self.has_factors = False
        self.factor_names = ()
        self.factor_sizes = ()
        self.factor_values = []
        self.num_classes = 10
        self._images = None
        self._labels = None
        self._lock = threading.Lock()

    def __getstate__(self):
        # Locks cannot be pickled (DataLoader workers under spawn); the data reloads on demand.
        return {**self.__dict__, '_images': None, '_labels': None, '_lock': None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._images is None:
                from PIL import Image
                from sklearn.datasets import load_digits

                bunch = load_digits()
                sources = np.asarray(bunch.images, dtype=np.float32) * np.float32(255.0 / 16.0)
                if sources.shape[0] != self.num_images:
                    raise RuntimeError(f'scikit-learn load_digits returned {sources.shape[0]} images, '
                                       f'expected {self.num_images}; reinstall scikit-learn.')
                upsampled = np.empty([self.num_images, 1, RESOLUTION, RESOLUTION], dtype=np.uint8)
                for index, image in enumerate(sources):
                    # Mode 'F' resamples in float, so rounding happens once, after the filter.
                    large = Image.fromarray(image, mode='F').resize((RESOLUTION, RESOLUTION), Image.BICUBIC)
                    upsampled[index, 0] = np.clip(np.rint(np.asarray(large)), 0, 255).astype(np.uint8)
                self._labels = np.asarray(bunch.target, dtype=np.int64)
                self._images = upsampled
        return self._images, self._labels

    def images(self, index):
        index = self._check_index(index)
        return self._load()[0][index]

    def labels(self, index):
        index = self._check_index(index)
        return self._load()[1][index]
