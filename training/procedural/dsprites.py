"""dSprites, rendered on the fly: 737 280 binary 64x64 images of a white sprite on black.

Factor grid (docs/DATASETS.md; identical to deepmind/dsprites-dataset; colour, which has a
single value there, is left out):
    shape        3   square, ellipse, heart (in this order)
    scale        6   linspace(0.5, 1, 6)
    orientation 40   linspace(0, 2*pi, 40) radians; both ends are included, so index 0 and 39 are
                     the same image (as in the original). One step is 2*pi/39 = 9.23 degrees.
    pos_x       32   linspace(0, 1, 32)
    pos_y       32   linspace(0, 1, 32)
The last factor varies fastest, so image i's factors are `np.unravel_index(i, (3, 6, 40, 32, 32))`.

Geometry (our choice; the original was drawn with vector primitives in LOVE2D on a canvas of
normalised size 1 and rasterised without anti-aliasing, but its sprite sizes and margins are not
published). All lengths below are fractions of the image width (64 px):
- Sprite size. The one number that is widely published about the original images is their mean
  intensity, 0.042494 (the fraction of white pixels over the whole set). We fix the proportions of
  the three shapes and choose the square's side at scale 1, `SQUARE_SIDE` = 0.308 (19.7 px), so that
  our full set has the same mean (measured: 0.042492, see tests). Proportions: the ellipse is 1.2
  sides long and 0.6 sides high (2:1, long axis horizontal at orientation 0); the heart is as wide
  as the square (the classic curve (x^2+y^2-1)^3 = x^2 y^3, point down at orientation 0, rotated
  about the centre of its bounding box).
- Positions. pos in [0, 1] maps linearly to the sprite centre in [margin, 1 - margin] with
  margin = the largest distance from the centre to any point of any scale-1 sprite (the square's
  half-diagonal, 0.218 = 13.9 px). So a sprite never leaves the frame at any orientation, the
  centre spans the central 56% of the image (pixel 13.9 .. 50.1), and one position step is 1.17 px,
  which keeps neighbouring positions distinguishable as the original intends.
- Axes. pos_x grows to the right (image columns), pos_y grows downwards (image rows, as on a
  screen and in LOVE2D). Orientation turns the sprite counter-clockwise as seen on screen.
- Rasterisation. A pixel is white when its centre is inside the shape: exactly 0 or 255, no
  anti-aliasing, like the original. The inside tests run on the pixel grid after the inverse
  rotation/scale/translation, vectorised over the batch with numpy (float32).
"""

import numpy as np

from training.procedural.base import ImageSource

SHAPE_NAMES = ('square', 'ellipse', 'heart')
RESOLUTION = 64
SQUARE_SIDE = 0.308
ELLIPSE_HALF_LENGTH = 0.6      # in units of SQUARE_SIDE
ELLIPSE_HALF_HEIGHT = 0.3
# Extent of the implicit heart (x^2+y^2-1)^3 <= x^2 y^3: |x| <= 1.1383, -1 <= y <= 1.2360.
HEART_CURVE_HALF_WIDTH = 1.1383
HEART_CURVE_CENTRE_Y = (1.2360 - 1.0) / 2
# Farthest point of any scale-1 sprite from its centre: the square's corner.
MAX_SPRITE_RADIUS = SQUARE_SIDE * np.sqrt(0.5)
POSITION_MARGIN = MAX_SPRITE_RADIUS
POSITION_SPAN = 1.0 - 2.0 * POSITION_MARGIN


def position_to_centre(position):
    """Sprite centre as a fraction of the image size for a pos_x/pos_y value in [0, 1]."""
    return POSITION_MARGIN + POSITION_SPAN * np.asarray(position, dtype=np.float64)


def render_sprites(shape, scale, orientation, pos_x, pos_y, resolution=RESOLUTION):
    """Binary sprites from continuous values: uint8 [N, 1, R, R], 0 or 255.

    shape: int [N] (0 square, 1 ellipse, 2 heart); scale: float [N] (1 = full size);
    orientation: float [N] radians, counter-clockwise; pos_x, pos_y: float [N] in [0, 1]
    (values outside still render, the sprite then leaves the frame).
    """
    shape = np.asarray(shape, dtype=np.int64).reshape(-1)
    count = shape.shape[0]

    def column(values):
        return np.broadcast_to(np.asarray(values, dtype=np.float64).reshape(-1), [count])

    scale, orientation, pos_x, pos_y = (column(v) for v in (scale, orientation, pos_x, pos_y))
    if np.any((shape < 0) | (shape >= len(SHAPE_NAMES))):
        raise ValueError(f'dsprites: shape must be 0 (square), 1 (ellipse) or 2 (heart), got {shape}.')
    if np.any(scale <= 0):
        raise ValueError('dsprites: scale must be positive.')

    # Reducing the angle first makes 0 and 2*pi produce bit-identical cos/sin (hence masks).
    angle = np.mod(orientation, 2.0 * np.pi)
    cos = np.cos(angle).astype(np.float32)
    sin = np.sin(angle).astype(np.float32)
    # Pixel units keep the float32 error far below the distance from any pixel centre to an edge.
    size_px = (scale * SQUARE_SIDE * resolution).astype(np.float32)
    centre_x = (position_to_centre(pos_x) * resolution).astype(np.float32)
    centre_y = (position_to_centre(pos_y) * resolution).astype(np.float32)
    pixel = np.arange(resolution, dtype=np.float32) + np.float32(0.5)

    output = np.zeros([count, 1, resolution, resolution], dtype=np.uint8)
    for shape_index, inside_test in enumerate((_inside_square, _inside_ellipse, _inside_heart)):
        members = np.nonzero(shape == shape_index)[0]
        if members.size == 0:
            continue
        inv_size = (1.0 / size_px[members])[:, None, None]
        offset_x = (pixel[None, None, :] - centre_x[members, None, None]) * inv_size   # [n, 1, R]
        offset_up = (centre_y[members, None, None] - pixel[None, :, None]) * inv_size  # [n, R, 1]
        c = cos[members, None, None]
        s = sin[members, None, None]
        # Inverse rotation: sprite-frame coordinates in units of the scaled square side.
        local_u = c * offset_x + s * offset_up
        local_v = c * offset_up - s * offset_x
        output[members, 0] = inside_test(local_u, local_v).astype(np.uint8) * np.uint8(255)
    return output


def _inside_square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.5


def _inside_ellipse(u, v):
    u = u * np.float32(1.0 / ELLIPSE_HALF_LENGTH)
    v = v * np.float32(1.0 / ELLIPSE_HALF_HEIGHT)
    return u * u + v * v <= 1.0


def _inside_heart(u, v):
    # The sprite is as wide as the square, i.e. the curve's width 2*1.1383 maps to 1 side.
    x = u * np.float32(2.0 * HEART_CURVE_HALF_WIDTH)
    y = v * np.float32(2.0 * HEART_CURVE_HALF_WIDTH) + np.float32(HEART_CURVE_CENTRE_Y)
    x2 = x * x
    r = x2 + y * y - 1.0
    return r * r * r <= x2 * y * y * y


class DSprites(ImageSource):
    """The dSprites factor grid, rendered on demand (no file)."""

    def __init__(self):
        self.name = 'dsprites'
        self.resolution = RESOLUTION
        self.num_channels = 1
        self.has_factors = True
        self.factor_names = ('shape', 'scale', 'orientation', 'pos_x', 'pos_y')
        self.factor_sizes = (3, 6, 40, 32, 32)
        self.num_images = int(np.prod(self.factor_sizes))
        self.num_classes = 0
        self.shape_names = SHAPE_NAMES
        self.factor_values = [
            np.arange(3, dtype=np.float64),
            np.linspace(0.5, 1.0, 6),
            np.linspace(0.0, 2.0 * np.pi, 40),
            np.linspace(0.0, 1.0, 32),
            np.linspace(0.0, 1.0, 32),
        ]

    def render(self, factors):
        factors = self._check_factors(factors)
        values = [np.asarray(v)[factors[:, i]] for i, v in enumerate(self.factor_values)]
        return render_sprites(factors[:, 0], *values[1:], resolution=self.resolution)
