"""Scene sampling for the synthetic dataset: rooms, textured primitives and camera paths (numpy).

Everything is deterministic from `(seed, split)`. Scenes: a closed room (10-14 x 3.8-5 x 10-14
units, every wall/floor/ceiling with its own procedural texture) holding 3-6 non-overlapping
textured primitives within 2.5 units of the centre; the camera stays >= 2.9 units from the centre
axis. Trajectories span the whole clip whatever its length: orbit (60-180 degree arcs: the far
sides of objects are disoccluded), dolly (in or out), pan (rotation in place), spline
(Catmull-Rom through random ring points); ood: crane (vertical rise/descent to a steep top-down
view). World frame: right-handed, y up, the floor is the plane y = 0.

Splits: `train` and `test` draw from the same families (test uses held-out seeds); `ood` uses
shape, texture and trajectory families that never appear in train/test (see FAMILIES).
`maskvid.data.synthetic` renders a scene.
"""
import colorsys

import numpy as np

SPLITS = ('train', 'test', 'ood')

# Families per split. Shape families map to the intersection routine (`_KIND`) that renders them.
FAMILIES = {
    'in_distribution': dict(
        shapes=('box', 'sphere', 'cylinder'),
        textures=('checker', 'stripes', 'gradient', 'noise'),
        trajectories=('orbit', 'dolly', 'pan', 'spline')),
    'ood': dict(
        shapes=('torus', 'cone', 'ellipsoid'),
        textures=('rings', 'dots', 'zigzag'),
        trajectories=('crane',)),
}
TEXTURES = ('checker', 'stripes', 'gradient', 'noise', 'rings', 'dots', 'zigzag')
_KIND = {'box': 'box', 'sphere': 'ellipsoid', 'ellipsoid': 'ellipsoid', 'cylinder': 'cylinder',
         'torus': 'torus', 'cone': 'cone'}
# Slots per shape family: fixed so each split compiles the ray caster once per (T, H, W).
_SLOTS = {'box': 3, 'sphere': 3, 'cylinder': 2, 'torus': 2, 'cone': 2, 'ellipsoid': 3}
_NUM_OBJECTS = (3, 6)          # inclusive range of objects per scene
_NUM_ROOM_FACES = 6            # floor, ceiling, -x, +x, -z, +z walls
_FOV_DEG = 50.0
_SEED_BASE = {'train': 0, 'test': 1_000_000_000, 'ood': 2_000_000_000}
SPLIT_CODE = {'train': 0, 'test': 0, 'ood': 1}   # test = same distribution as train


def family_set(split: str) -> dict:
  """The shape / texture families a split draws from (FAMILIES['ood'] or ['in_distribution'])."""
  _check_split(split)
  return FAMILIES['ood' if split == 'ood' else 'in_distribution']


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')


def split_seeds(split: str, num_clips: int) -> np.ndarray:
  """Seeds of the first `num_clips` clips of `split`: int64 [num_clips], disjoint across splits."""
  _check_split(split)
  if not 0 <= int(num_clips) < 1_000_000_000:
    raise ValueError(f'num_clips must be in [0, 1e9), got {num_clips}')
  return np.arange(num_clips, dtype=np.int64) + _SEED_BASE[split]


# ----------------------------------------------------------------------------------------------
# Scene sampling (numpy, deterministic)
# ----------------------------------------------------------------------------------------------

def _rot_y(a: float) -> np.ndarray:
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
  q = rng.normal(size=4)
  w, x, y, z = q / np.linalg.norm(q)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _hsv(h, s, v) -> np.ndarray:
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _unit(rng: np.random.Generator) -> np.ndarray:
  v = rng.normal(size=3)
  return v / np.linalg.norm(v)


def sample_material(rng: np.random.Generator, family: str, is_plane: bool) -> dict:
  hue = rng.uniform()
  a = _hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0))
  b = _hsv(hue + rng.uniform(0.25, 0.75), rng.uniform(0.55, 1.0), rng.uniform(0.5, 0.95))
  # Texture periods of 0.45-1 units on objects, 1.1-2.5 on walls: a few periods per object,
  # and still >= 2 px per cell on far walls at 32 x 32.
  freq = rng.uniform(1.0, 2.2) if not is_plane else rng.uniform(0.4, 0.9)
  return dict(
      family=TEXTURES.index(family), color_a=a, color_b=b, freq=freq,
      # Phases in [0.2, 0.8] keep axis-aligned faces (e.g. the floor at y=0) off cell boundaries.
      phase=rng.uniform(0.2, 0.8, size=3), u=_unit(rng), w=_unit(rng),
      noise_dirs=np.stack([_unit(rng) for _ in range(4)]),
      noise_freq=rng.uniform(0.8, 2.5, size=4) * (0.6 if is_plane else 1.0),
      noise_phase=rng.uniform(0, 1, size=4), center=rng.normal(size=3) * 0.3)


def _sample_object(rng: np.random.Generator, shape: str) -> dict:
  """Returns dict(shape, size [3], rot [3,3] world->local, radius (xz bounding), lowest)."""
  if shape == 'box':
    size = rng.uniform(0.25, 0.6, size=3)
    rot = _rot_y(rng.uniform(0, 2 * np.pi))
    radius, lowest = np.hypot(size[0], size[2]), size[1]
  elif shape == 'sphere':
    r = rng.uniform(0.3, 0.6)
    size, rot = np.array([r, r, r]), _random_rotation(rng)
    radius, lowest = r, r
  elif shape == 'cylinder':
    size = np.array([rng.uniform(0.2, 0.45), rng.uniform(0.3, 0.8), 0.0])
    rot = _rot_y(rng.uniform(0, 2 * np.pi))
    radius, lowest = size[0], size[1]
  elif shape == 'cone':
    size = np.array([rng.uniform(0.3, 0.55), rng.uniform(0.35, 0.8), 0.0])
    rot = _rot_y(rng.uniform(0, 2 * np.pi))
    radius, lowest = size[0], size[1]
  elif shape == 'ellipsoid':
    while True:
      size = rng.uniform(0.18, 0.7, size=3)
      if size.max() / size.min() >= 1.6:
        break
    rot = _random_rotation(rng)
    # Lowest point of the rotated ellipsoid: support function along -y in the local frame.
    radius, lowest = size.max(), float(np.sqrt(np.sum((size * rot[:, 1]) ** 2)))
  elif shape == 'torus':
    size = np.array([rng.uniform(0.35, 0.55), rng.uniform(0.1, 0.2), 0.0])
    tilt = rng.uniform(0, 0.5 * np.pi)
    c, s = np.cos(tilt), np.sin(tilt)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ _rot_y(rng.uniform(0, 2 * np.pi))
    axis_y = rot[1, 1]   # world-y component of the torus axis (local y)
    radius = size[0] + size[1]
    lowest = size[0] * np.sqrt(max(0.0, 1 - axis_y ** 2)) + size[1]
  else:
    raise ValueError(f'unknown shape {shape!r}')
  return dict(shape=shape, size=np.asarray(size, np.float64), rot=rot, radius=float(radius),
              lowest=float(lowest))


def _catmull_rom(points: np.ndarray, s: np.ndarray) -> np.ndarray:
  """Uniform Catmull-Rom spline through `points` [K,3] evaluated at s in [0,1] -> [len(s),3]."""
  p = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
  seg = np.minimum((s * (len(points) - 1)).astype(int), len(points) - 2)
  u = (s * (len(points) - 1) - seg)[:, None]
  p0, p1, p2, p3 = p[seg], p[seg + 1], p[seg + 2], p[seg + 3]
  return 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * u ** 3)


def _ring(angle, radius, height):
  return np.stack([radius * np.cos(angle), height, radius * np.sin(angle)], axis=-1)


def _sample_trajectory(rng: np.random.Generator, kind: str, num_frames: int, room: np.ndarray):
  """Eyes and look-at targets [T,3]; the camera stays >= 2.9 units from the room centre axis."""
  s = np.linspace(0.0, 1.0, num_frames)
  ease = s * s * (3 - 2 * s)
  theta0 = rng.uniform(0, 2 * np.pi)
  target0 = np.array([rng.uniform(-0.4, 0.4), rng.uniform(0.2, 0.8), rng.uniform(-0.4, 0.4)])
  targets = np.tile(target0, (num_frames, 1))
  if kind == 'orbit':
    # Large viewpoint change (60-180 degrees) so the far side of objects is disoccluded.
    sweep = rng.uniform(np.pi / 3, np.pi) * rng.choice([-1, 1])
    eyes = _ring(theta0 + sweep * s, rng.uniform(3.2, 4.6), np.full_like(s, rng.uniform(0.8, 2.2)))
  elif kind == 'dolly':
    r0, r1 = rng.uniform(4.2, 4.8), rng.uniform(2.9, 3.4)
    if rng.uniform() < 0.5:
      r0, r1 = r1, r0
    dtheta = rng.uniform(-0.4, 0.4)
    h0, h1 = rng.uniform(0.8, 2.0, size=2)
    eyes = _ring(theta0 + dtheta * ease, r0 + (r1 - r0) * ease, h0 + (h1 - h0) * ease)
  elif kind == 'pan':
    eye = _ring(theta0, rng.uniform(3.5, 4.6), rng.uniform(0.9, 2.0))
    eyes = np.tile(eye, (num_frames, 1))
    to_centre = np.arctan2(-eye[2], -eye[0])
    yaw = to_centre + rng.uniform(-0.3, 0.3) + rng.uniform(0.5, 1.1) * rng.choice([-1, 1]) * (ease - 0.5)
    targets = eye + np.stack([np.cos(yaw), np.full_like(yaw, -0.25), np.sin(yaw)], -1)
  elif kind == 'spline':
    k = 4
    angles = theta0 + np.sort(rng.uniform(0, rng.uniform(0.8, 2.5), size=k)) * rng.choice([-1, 1])
    ctrl = _ring(angles, rng.uniform(3.0, 4.6, size=k), rng.uniform(0.7, 2.3, size=k))
    eyes = _catmull_rom(ctrl, s)
    r = np.hypot(eyes[:, 0], eyes[:, 2])[:, None]   # Catmull-Rom can overshoot inwards
    eyes[:, [0, 2]] *= np.maximum(1.0, 2.9 / r)
    targets = _catmull_rom(target0 + rng.uniform(-0.4, 0.4, size=(k, 3)) * [1, 0.3, 1], s)
  elif kind == 'crane':
    # Vertical motion to a steep top-down view: never seen in train (heights there are < 2.3).
    low, high = rng.uniform(0.5, 1.0), min(room[1] - 0.4, rng.uniform(3.3, 4.2))
    if rng.uniform() < 0.5:
      low, high = high, low
    r0, r1 = rng.uniform(3.8, 4.6), rng.uniform(3.0, 3.6)
    eyes = _ring(theta0 + rng.uniform(-0.6, 0.6) * ease, r0 + (r1 - r0) * ease,
                 low + (high - low) * ease)
  else:
    raise ValueError(f'unknown trajectory {kind!r}')
  return eyes, targets


def clip_speed(seed: int, speeds) -> float:
  """The camera speed of clip `seed` drawn from `speeds` (a tuple of factors; deterministic).

  A draw per clip, independent of the scene's own random stream, so the same seed keeps its
  scene whatever the speed mix.
  """
  speeds = tuple(float(s) for s in speeds)
  if not speeds or min(speeds) < 0:
    raise ValueError(f'camera speeds must be a non-empty tuple of factors >= 0, got {speeds!r}')
  return speeds[int(np.random.default_rng([int(seed), 11]).integers(len(speeds)))]


def scale_path(scene: dict, speed: float) -> dict:
  """The scene with its camera path shrunk toward the first pose: `p0 + speed (p - p0)` for eyes
  and look-at targets. speed 0 = a static camera, 1 = the path as sampled; the scene is
  unchanged otherwise."""
  speed = float(speed)
  if speed < 0:
    raise ValueError(f'speed must be >= 0, got {speed}')
  out = dict(scene, speed=speed)
  if speed == 1.0:   # bit-identical to the sampled path
    return out
  for key in ('eyes', 'targets'):
    p = np.asarray(scene[key])
    out[key] = p[:1] + speed * (p - p[:1])
  return out


def sample_scene(seed: int, split: str, num_frames: int, speed: float = 1.0) -> dict:
  """The scene description of clip `seed` (numpy; deterministic). Family names are included.

  `speed` scales the camera path (`scale_path`): 1 is the sampled path, 0 a static camera.
  """
  _check_split(split)
  fam = family_set(split)
  rng = np.random.default_rng([int(seed), SPLIT_CODE[split], 7])
  room = np.array([rng.uniform(5.0, 7.0), rng.uniform(3.8, 5.0), rng.uniform(5.0, 7.0)])
  room_mats = [sample_material(rng, rng.choice(fam['textures']), is_plane=True)
               for _ in range(_NUM_ROOM_FACES)]
  count = rng.integers(_NUM_OBJECTS[0], _NUM_OBJECTS[1] + 1)
  free = {name: _SLOTS[name] for name in fam['shapes']}
  objects = []
  for _ in range(count):
    shape = rng.choice([n for n, k in free.items() if k > 0])
    obj = _sample_object(rng, shape)
    for _ in range(50):   # rejection sampling: objects must not overlap (xz bounding circles)
      pos = rng.uniform(-1.9, 1.9, size=2)
      if np.hypot(*pos) + obj['radius'] > 2.5:
        continue
      if all(np.hypot(*(pos - o['center'][[0, 2]])) > obj['radius'] + o['radius'] + 0.05
             for o in objects):
        break
    else:
      continue
    lift = rng.uniform(0.3, 0.8) if (shape in ('sphere', 'ellipsoid') and
                                      rng.uniform() < 0.25) else 0.0
    obj['center'] = np.array([pos[0], obj['lowest'] + lift, pos[1]])
    obj['material'] = sample_material(rng, rng.choice(fam['textures']), is_plane=False)
    free[shape] -= 1
    objects.append(obj)
  trajectory = str(rng.choice(fam['trajectories']))
  eyes, targets = _sample_trajectory(rng, trajectory, num_frames, room)
  key = _unit(rng) * [0.6, 0, 0.6] + [0, 1.0, 0]
  light_dirs = np.stack([key / np.linalg.norm(key), _unit(rng)])
  return scale_path(dict(
              seed=int(seed), split=split, room=room, room_materials=room_mats, objects=objects,
              trajectory=trajectory, eyes=eyes, targets=targets, light_dirs=light_dirs,
              shape_families=sorted({o['shape'] for o in objects}),
              texture_families=sorted({TEXTURES[m['family']] for m in
                                       room_mats + [o['material'] for o in objects]})),
      speed)
