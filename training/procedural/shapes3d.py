"""A 3D Shapes look-alike (Burgess & Kim 2018, deepmind/3d-shapes), rendered without any file.

480 000 RGB 64x64 images of one object standing on a floor in front of a back wall.
Factor grid (last factor fastest, like the original `labels` array):
    floor_hue   10   0.0, 0.1, ..., 0.9 (HSV hue at full saturation and value)
    wall_hue    10   same
    object_hue  10   same
    scale        8   linspace(0.75, 1.25, 8)
    shape        4   cube, cylinder, sphere, capsule (the original's order)
    orientation 15   linspace(-30, 30, 15) degrees

Hue values: the original README says "10 values linearly spaced in [0, 1]", but the published
labels are 0.0, 0.1, ..., 0.9 (the endpoint is excluded). We use those: with 1.0 included, hue 0
and hue 1 would be the same red and two factor values would render identical images.

Scene (our choice, a look-alike, not a re-render of the original MuJoCo scene):
- Pinhole camera at (0, 1.5, -3.6) looking at (0, 0.6, 0), vertical field of view 40 degrees;
  floor is the plane y = 0 (lower half of the image, in perspective), the back wall the plane
  z = 2.2 (upper half). The object stands on the floor at the origin, in the middle of the image.
- Object sizes at scale 1: cube of side 1; upright cylinder of radius 0.5 and height 1; sphere of
  radius 0.5; capsule (radius 0.35, 1.4 long) lying on its side along the object's x axis.
- Orientation rotates the OBJECT about the vertical axis through its centre (positive =
  counter-clockwise seen from above). The original rotates the whole view instead; we keep the
  camera and the room fixed so that orientation, scale and shape change object pixels only.
  Because a sphere, and an upright cylinder, look the same at every rotation about that axis, every
  object carries a two-tone pattern fixed to its body: four 90-degree sectors around the vertical
  axis, alternately full and 0.6 brightness (the cube's side faces alternate; the sphere looks like
  a beach ball). The pattern repeats every 90 degrees and the factor spans 60, so all 15
  orientations of every shape render differently.
- Shading: one directional light (from the upper left, behind the camera) with ambient +
  Lambertian + a small white Blinn-Phong highlight on the object; Lambertian with a gentle
  depth/height gradient on floor and wall. No shadows, so floor and wall pixels depend only on
  their own hue and on which pixels the object covers.
- Each pixel averages 4x4 rays (anti-aliasing). Every ray ends on exactly one of floor, wall,
  object, so a pixel is a linear mix
      rgb = floor_rgb * F + wall_rgb * W + object_rgb * D + S
  where F, W, D are per-pixel shading weights (zero where that region is absent) and S the
  highlight. These four maps depend only on (scale, shape, orientation): 480 configurations,
  ray-cast analytically (ray-box, ray-cylinder, ray-sphere, ray-capsule) once per process
  (about 2 s on one core) and cached; an image is then one small matrix product (about 15 000
  images/s on one core, docs/PERFORMANCE.md).
  `region_masks` returns F > 0, W > 0, D > 0: changing a hue changes only its region's pixels,
  changing scale/shape/orientation only pixels the object covers in either image.
"""

import threading

import numpy as np

from training.procedural.base import ImageSource

SHAPE_NAMES = ('cube', 'cylinder', 'sphere', 'capsule')
REGION_NAMES = ('floor', 'wall', 'object')
RESOLUTION = 64
SUPERSAMPLING = 4

CAMERA_POSITION = np.array([0.0, 1.5, -3.6])
CAMERA_TARGET = np.array([0.0, 0.6, 0.0])
VERTICAL_FOV_DEGREES = 40.0
WALL_Z = 2.2
LIGHT_DIRECTION = np.array([-0.45, 0.8, -0.55])   # towards the light
AMBIENT = 0.35
DIFFUSE = 0.65
SPECULAR = 0.35
SHININESS = 24.0
PATTERN_DARK_TONE = 0.6

CUBE_SIDE = 1.0
CYLINDER_RADIUS, CYLINDER_HEIGHT = 0.5, 1.0
SPHERE_RADIUS = 0.5
CAPSULE_RADIUS, CAPSULE_HALF_SEGMENT = 0.35, 0.35


def hue_to_rgb(hue):
    """HSV (hue, 1, 1) to RGB in [0, 1]; hue float [N] -> [N, 3]."""
    hue = np.mod(np.asarray(hue, dtype=np.float64), 1.0) * 6.0
    sector = np.floor(hue).astype(np.int64) % 6
    rising = hue - np.floor(hue)
    falling = 1.0 - rising
    one, zero = np.ones_like(hue), np.zeros_like(hue)
    table = np.stack([
        np.stack([one, rising, zero], -1), np.stack([falling, one, zero], -1),
        np.stack([zero, one, rising], -1), np.stack([zero, falling, one], -1),
        np.stack([rising, zero, one], -1), np.stack([one, zero, falling], -1),
    ], axis=0)
    return table[sector, np.arange(hue.shape[0])]


def _dot(a, b):
    # einsum avoids numpy's slow reductions over a trailing axis of length 3.
    return np.einsum('...i,...i->...', a, b)


def _normalize(vectors):
    return vectors / np.sqrt(_dot(vectors, vectors))[..., None]


def camera_rays(resolution=RESOLUTION, supersampling=SUPERSAMPLING):
    """Unit ray directions [(R*S)^2, 3], row-major over the supersampled grid (top row first)."""
    forward = _normalize(CAMERA_TARGET - CAMERA_POSITION)
    right = _normalize(np.cross(np.array([0.0, 1.0, 0.0]), forward))
    up = np.cross(forward, right)
    half_height = np.tan(np.radians(VERTICAL_FOV_DEGREES) / 2)
    size = resolution * supersampling
    offsets = ((np.arange(size) + 0.5) / size * 2.0 - 1.0) * half_height
    screen_x, screen_y = np.meshgrid(offsets, -offsets)   # image rows go down
    directions = forward + screen_x[..., None] * right + screen_y[..., None] * up
    return _normalize(directions.reshape(-1, 3))


def _smaller_positive_root(a, half_b, c):
    """Smaller root t > 0 of a t^2 + 2 half_b t + c = 0, inf where there is none."""
    disc = half_b * half_b - a * c
    valid = (disc >= 0) & (a > 1e-12)
    root = np.sqrt(np.where(valid, disc, 0.0))
    safe_a = np.where(valid, a, 1.0)
    near = (-half_b - root) / safe_a
    far = (-half_b + root) / safe_a
    t = np.where(near > 1e-6, near, far)
    return np.where(valid & (t > 1e-6), t, np.inf)


def _hit_sphere(origin, direction, centre, radius):
    offset = origin - centre
    t = _smaller_positive_root(_dot(direction, direction), _dot(offset, direction),
                               _dot(offset, offset) - radius * radius)
    normal = offset + np.where(np.isfinite(t), t, 0.0)[:, None] * direction
    return t, normal


def _hit_box(origin, direction, half):
    low = np.array([-half, 0.0, -half])
    high = np.array([half, 2.0 * half, half])
    safe = np.where(np.abs(direction) < 1e-12, 1e-12, direction)
    t1 = (low - origin) / safe
    t2 = (high - origin) / safe
    t_min = np.minimum(t1, t2)
    t_max = np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(t_min[:, 0], t_min[:, 1]), t_min[:, 2])
    t_far = np.minimum(np.minimum(t_max[:, 0], t_max[:, 1]), t_max[:, 2])
    hit = (t_near <= t_far) & (t_near > 1e-6)
    axis = np.where(t_min[:, 0] == t_near, 0, np.where(t_min[:, 1] == t_near, 1, 2))
    normal = np.zeros_like(origin)
    rows = np.arange(origin.shape[0])
    normal[rows, axis] = -np.sign(direction[rows, axis])
    return np.where(hit, t_near, np.inf), normal


def _hit_cylinder(origin, direction, radius, height):
    ox, oy, oz = origin.T
    dx, dy, dz = direction.T
    t_side = _smaller_positive_root(dx * dx + dz * dz, ox * dx + oz * dz, ox * ox + oz * oz - radius * radius)
    y_side = oy + t_side * dy
    t_side = np.where((y_side >= 0) & (y_side <= height), t_side, np.inf)
    safe_dy = np.where(np.abs(dy) < 1e-12, 1e-12, dy)
    t_cap = (height - oy) / safe_dy
    cap_x, cap_z = ox + t_cap * dx, oz + t_cap * dz
    t_cap = np.where((t_cap > 1e-6) & (cap_x * cap_x + cap_z * cap_z <= radius * radius), t_cap, np.inf)
    t = np.minimum(t_side, t_cap)
    point = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * direction
    side_normal = np.stack([point[:, 0], np.zeros_like(t), point[:, 2]], -1)
    cap_normal = np.tile(np.array([0.0, 1.0, 0.0]), (t.shape[0], 1))
    normal = np.where((t_cap <= t_side)[:, None], cap_normal, side_normal)
    return t, normal


def _hit_capsule(origin, direction, radius, half_segment):
    # Axis along x at height `radius`: a cylinder around that axis, capped by two spheres.
    ox, oy, oz = origin.T
    dx, dy, dz = direction.T
    rel_y = oy - radius
    t_side = _smaller_positive_root(dy * dy + dz * dz, rel_y * dy + oz * dz, rel_y * rel_y + oz * oz - radius * radius)
    t_side = np.where(np.abs(ox + t_side * dx) <= half_segment, t_side, np.inf)
    t_left, _ = _hit_sphere(origin, direction, np.array([-half_segment, radius, 0.0]), radius)
    t_right, _ = _hit_sphere(origin, direction, np.array([half_segment, radius, 0.0]), radius)
    t = np.minimum(t_side, np.minimum(t_left, t_right))
    point = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * direction
    closest = np.stack([np.clip(point[:, 0], -half_segment, half_segment),
                        np.full_like(t, radius), np.zeros_like(t)], -1)
    return t, point - closest


def trace_object(shape, scale, orientation_degrees, directions):
    """Object hits for rays from the camera: (t [M] with inf for misses, unit normal [M, 3] in
    world space, body-fixed pattern tone [M])."""
    angle = np.radians(orientation_degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    # World -> object frame is the rotation by -angle about y (object turned by +angle).
    to_local = np.array([[cos, 0.0, -sin], [0.0, 1.0, 0.0], [sin, 0.0, cos]])
    origin = np.broadcast_to(to_local @ CAMERA_POSITION, directions.shape)
    direction = directions @ to_local.T
    if shape == 0:
        t, normal = _hit_box(origin, direction, 0.5 * CUBE_SIDE * scale)
    elif shape == 1:
        t, normal = _hit_cylinder(origin, direction, CYLINDER_RADIUS * scale, CYLINDER_HEIGHT * scale)
    elif shape == 2:
        t, normal = _hit_sphere(origin, direction, np.array([0.0, SPHERE_RADIUS * scale, 0.0]),
                                SPHERE_RADIUS * scale)
    else:
        t, normal = _hit_capsule(origin, direction, CAPSULE_RADIUS * scale, CAPSULE_HALF_SEGMENT * scale)
    point = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * direction
    azimuth = np.arctan2(point[:, 2], point[:, 0])
    sector = np.floor((azimuth + np.pi / 4) / (np.pi / 2)).astype(np.int64)
    # Odd sectors (the ones facing the camera and away from it at orientation 0) are full tone.
    tone = np.where(sector % 2 == 1, 1.0, PATTERN_DARK_TONE)
    world_normal = _normalize(normal @ to_local + 1e-12)   # inverse rotation = transpose
    return t, world_normal, tone


def bounding_sphere(shape, scale):
    """(centre [3], radius) of a sphere that contains the object at any orientation; rays that
    miss it cannot hit the object, which keeps the ray casting to a small part of the image."""
    if shape == 0:
        half = 0.5 * CUBE_SIDE * scale
        return np.array([0.0, half, 0.0]), half * np.sqrt(3.0)
    if shape == 1:
        radius, half_height = CYLINDER_RADIUS * scale, 0.5 * CYLINDER_HEIGHT * scale
        return np.array([0.0, half_height, 0.0]), np.hypot(radius, half_height)
    if shape == 2:
        radius = SPHERE_RADIUS * scale
        return np.array([0.0, radius, 0.0]), radius
    radius = CAPSULE_RADIUS * scale
    return np.array([0.0, radius, 0.0]), radius + CAPSULE_HALF_SEGMENT * scale


def _object_shading(normal, direction, tone):
    light = _normalize(LIGHT_DIRECTION)
    lambert = np.clip(normal @ light, 0.0, None)
    halfway = _normalize(light - direction)
    highlight = SPECULAR * np.clip(_dot(normal, halfway), 0.0, None) ** SHININESS
    highlight = np.where(lambert > 0, highlight, 0.0)
    return tone * (AMBIENT + DIFFUSE * lambert), highlight


def _camera_pitch():
    """Downward tilt of the optical axis, radians."""
    forward = _normalize(CAMERA_TARGET - CAMERA_POSITION)
    return np.arcsin(-forward[1])


def _background(directions):
    """Per ray: distance to floor/wall, True where the floor is hit first, and the shading weight."""
    light = _normalize(LIGHT_DIRECTION)
    dy, dz = directions[:, 1], directions[:, 2]
    t_wall = (WALL_Z - CAMERA_POSITION[2]) / dz
    t_floor = np.where(dy < -1e-12, -CAMERA_POSITION[1] / np.where(dy < -1e-12, dy, -1.0), np.inf)
    is_floor = t_floor < t_wall
    t = np.where(is_floor, t_floor, t_wall)
    point = CAMERA_POSITION + t[:, None] * directions
    # Flat Lambertian terms, times gentle gradients (floor darker with distance, wall darker up
    # high) so the planes read as a room; all values stay well above zero (region masks use > 0).
    distance = np.sqrt(_dot(point - CAMERA_POSITION, point - CAMERA_POSITION))
    corner_distance = np.linalg.norm(np.array([0.0, 0.0, WALL_Z]) - CAMERA_POSITION)
    nearest_floor = CAMERA_POSITION[1] / np.sin(np.radians(VERTICAL_FOV_DEGREES / 2) + _camera_pitch())
    depth = np.clip((distance - nearest_floor) / (corner_distance - nearest_floor), 0.0, 1.0)
    floor_shade = (AMBIENT + DIFFUSE * light[1]) * (1.0 - 0.35 * depth)
    height = np.clip(point[:, 1] / 3.0, 0.0, 1.0)
    wall_shade = (AMBIENT + DIFFUSE * max(-light[2], 0.0)) * (1.0 - 0.3 * height)
    shade = np.where(is_floor, floor_shade, wall_shade)
    return t, is_floor, shade


class _SceneCache:
    """The four per-pixel maps (F, W, D, S) of every (scale, shape, orientation) configuration."""

    def __init__(self, scales, orientations, resolution=RESOLUTION, supersampling=SUPERSAMPLING):
        size = resolution * supersampling
        directions = camera_rays(resolution, supersampling)
        t_background, is_floor, background_shade = _background(directions)
        floor_weight = np.where(is_floor, background_shade, 0.0).reshape(size, size)
        wall_weight = np.where(is_floor, 0.0, background_shade).reshape(size, size)

        def pool(values):
            rows, columns = values.shape[0] // supersampling, values.shape[1] // supersampling
            grid = values.reshape(rows, supersampling, columns, supersampling)
            return grid.mean(axis=(1, 3)).astype(np.float32)

        empty_scene = np.stack([pool(floor_weight), pool(wall_weight),
                                np.zeros([resolution, resolution], np.float32),
                                np.zeros([resolution, resolution], np.float32)])
        configs = [(scale, shape, orientation) for scale in scales for shape in range(len(SHAPE_NAMES))
                   for orientation in orientations]
        # Per configuration: floor, wall, object shading weights and the highlight, [4, R, R].
        self.maps = np.repeat(empty_scene[None], len(configs), axis=0)
        windows = {}
        for index, (scale, shape, orientation) in enumerate(configs):
            if (scale, shape) not in windows:
                windows[(scale, shape)] = self._window(directions, shape, scale, resolution, supersampling)
            candidates, rows, columns, top, left, height, width = windows[(scale, shape)]
            t, normal, tone = trace_object(shape, scale, orientation, directions[candidates])
            in_front = t < t_background[candidates]
            diffuse, highlight = _object_shading(normal, directions[candidates], tone)
            # Only the window around the object differs from the empty scene.
            window = (slice(top * supersampling, (top + height) * supersampling),
                      slice(left * supersampling, (left + width) * supersampling))
            hit_rows, hit_columns = rows[in_front], columns[in_front]
            covered = np.zeros([height * supersampling, width * supersampling], dtype=bool)
            covered[hit_rows, hit_columns] = True
            object_weight = np.zeros(covered.shape)
            object_weight[hit_rows, hit_columns] = diffuse[in_front]
            object_highlight = np.zeros(covered.shape)
            object_highlight[hit_rows, hit_columns] = highlight[in_front]
            pixels = (slice(top, top + height), slice(left, left + width))
            self.maps[index, 0][pixels] = pool(np.where(covered, 0.0, floor_weight[window]))
            self.maps[index, 1][pixels] = pool(np.where(covered, 0.0, wall_weight[window]))
            self.maps[index, 2][pixels] = pool(object_weight)
            self.maps[index, 3][pixels] = pool(object_highlight)

    @staticmethod
    def _window(directions, shape, scale, resolution, supersampling):
        """Rays that may hit the object, their (row, column) inside the smallest pixel-aligned
        window that holds them, and that window (top, left, height, width in pixels)."""
        size = resolution * supersampling
        centre, radius = bounding_sphere(shape, scale)
        to_centre = centre - CAMERA_POSITION
        along = directions @ to_centre
        miss_distance2 = _dot(to_centre, to_centre) - along * along
        candidates = np.nonzero(miss_distance2 <= (radius * 1.001) ** 2)[0]
        rows, columns = candidates // size, candidates % size
        top, left = rows.min() // supersampling, columns.min() // supersampling
        height = rows.max() // supersampling + 1 - top
        width = columns.max() // supersampling + 1 - left
        return (candidates, rows - top * supersampling, columns - left * supersampling,
                top, left, height, width)


class Shapes3D(ImageSource):
    """The 3D Shapes factor grid, rendered on demand (no file). See the module docstring."""

    def __init__(self):
        self.name = 'shapes3d'
        self.resolution = RESOLUTION
        self.num_channels = 3
        self.has_factors = True
        self.factor_names = ('floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation')
        self.factor_sizes = (10, 10, 10, 8, 4, 15)
        self.num_images = int(np.prod(self.factor_sizes))
        self.num_classes = 0
        self.shape_names = SHAPE_NAMES
        self.region_names = REGION_NAMES
        hues = np.arange(10) / 10.0
        self.factor_values = [hues, hues, hues, np.linspace(0.75, 1.25, 8),
                              np.arange(4, dtype=np.float64), np.linspace(-30.0, 30.0, 15)]
        self._hue_rgb = hue_to_rgb(hues).astype(np.float32)
        self._cache = None
        self._cache_lock = threading.Lock()

    def __getstate__(self):
        # Locks cannot be pickled (DataLoader workers under spawn); the cache (31 MB) is rebuilt.
        return {**self.__dict__, '_cache': None, '_cache_lock': None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()

    def _scene(self):
        with self._cache_lock:
            if self._cache is None:
                self._cache = _SceneCache(self.factor_values[3], self.factor_values[5])
            return self._cache

    def _config_index(self, factors):
        return (factors[:, 3] * 4 + factors[:, 4]) * 15 + factors[:, 5]

    def render(self, factors):
        factors = self._check_factors(factors)
        maps = self._scene().maps
        count, size = factors.shape[0], self.resolution
        output = np.empty([count, 3, size, size], dtype=np.uint8)
        # Chunks keep the float32 temporaries inside the CPU cache (3x faster than one big batch).
        for begin in range(0, count, 256):
            chunk = factors[begin:begin + 256]
            # rgb = [floor_rgb, wall_rgb, object_rgb, white] @ [F, W, D, S], per pixel.
            weights = np.empty([chunk.shape[0], 3, 4], dtype=np.float32)
            weights[:, :, 0] = self._hue_rgb[chunk[:, 0]]
            weights[:, :, 1] = self._hue_rgb[chunk[:, 1]]
            weights[:, :, 2] = self._hue_rgb[chunk[:, 2]]
            weights[:, :, 3] = 1.0
            weights *= 255.0
            chunk_maps = maps[self._config_index(chunk)].reshape(chunk.shape[0], 4, size * size)
            value = np.matmul(weights, chunk_maps)
            np.clip(value + 0.5, 0.0, 255.0, out=value)
            output[begin:begin + 256] = value.astype(np.uint8).reshape(-1, 3, size, size)
        return output

    def region_masks(self, factors):
        """bool [N, 3, R, R]: pixels that floor, wall and object (REGION_NAMES order) touch.

        A pixel on an edge belongs to both regions (it averages rays that hit either)."""
        factors = self._check_factors(factors)
        return self._scene().maps[self._config_index(factors), :3] > 0
