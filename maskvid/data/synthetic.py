"""Procedural multi-view video: textured primitives in a room, seen by a moving camera.

Everything is deterministic from `(seed, split)`: the scene is sampled with numpy, then one
jitted JAX ray caster renders all pixels of all frames of a clip at once (analytic ray/primitive
intersections; sphere tracing only for the torus).

Conventions (what downstream geometry code relies on):
  * World frame: right-handed, y up, the floor is the plane y = 0.
  * Camera frame: OpenCV, x right, y down, z forward. `world_to_camera[t] @ [X, 1]` maps a world
    point to camera frame t.
  * Intrinsics: pinhole `K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]` with the OpenCV pixel convention:
    the centre of pixel (row v, column u) is at image coordinates (u, v), so cx = (W - 1) / 2.
  * Depth: z-depth along the camera's optical axis (the camera-frame z of the visible surface
    point), NOT the Euclidean ray length. Unprojection is `X_cam = depth * K^-1 [u, v, 1]`.
    Every pixel sees a surface (the camera is inside a closed room), so depth is finite and > 0.
  * Lighting is fixed in the world (two directional lights + ambient, Lambertian, no specular), so a
    surface point has the same colour in every frame: colour consistency across views is exact up
    to pixel sampling.

Scenes: a closed room (10-14 x 3.8-5 x 10-14 units, every wall/floor/ceiling with its own
procedural texture) holding 3-6 non-overlapping textured primitives within 2.5 units of the
centre; a 50 degree field of view; the camera stays >= 2.9 units from the centre axis.
Trajectories span the whole clip whatever its length: orbit (60-180 degree arcs: the far sides of
objects are disoccluded), dolly (in or out), pan (rotation in place), spline (Catmull-Rom through
random ring points); ood: crane (vertical rise/descent to a steep top-down view).

Splits: `train` and `test` draw from the same families (test uses held-out seeds); `ood` uses
shape, texture and trajectory families that never appear in train/test (see FAMILIES).

Determinism: the same (seed, split, T, H, W) gives bit-identical clips on a given JAX backend.
The ray caster compiles once per (family set, T, H, W) and then costs ~36 ms of CPU per
16 x 64 x 64 clip (`python -m maskvid.bench.data`).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
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
_EPS = 1e-4
_SEED_BASE = {'train': 0, 'test': 1_000_000_000, 'ood': 2_000_000_000}
_SPLIT_CODE = {'train': 0, 'test': 0, 'ood': 1}   # test = same distribution as train


def _family_set(split: str) -> dict:
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
  import colorsys
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _unit(rng: np.random.Generator) -> np.ndarray:
  v = rng.normal(size=3)
  return v / np.linalg.norm(v)


def _sample_material(rng: np.random.Generator, family: str, is_plane: bool) -> dict:
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


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
  """World-to-camera [T,4,4] (OpenCV axes) for eyes/targets [T,3] with world up = +y."""
  fwd = target - eye
  fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
  right = np.cross(fwd, np.array([0.0, 1.0, 0.0]))
  right /= np.linalg.norm(right, axis=-1, keepdims=True)
  down = np.cross(fwd, right)
  rot = np.stack([right, down, fwd], axis=-2)           # rows = camera axes in world coords
  w2c = np.tile(np.eye(4), (len(eye), 1, 1))
  w2c[:, :3, :3] = rot
  w2c[:, :3, 3] = -np.einsum('tij,tj->ti', rot, eye)
  return w2c


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


def sample_scene(seed: int, split: str, num_frames: int) -> dict:
  """The scene description of clip `seed` (numpy; deterministic). Family names are included."""
  _check_split(split)
  fam = _family_set(split)
  rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], 7])
  room = np.array([rng.uniform(5.0, 7.0), rng.uniform(3.8, 5.0), rng.uniform(5.0, 7.0)])
  room_mats = [_sample_material(rng, rng.choice(fam['textures']), is_plane=True)
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
    obj['material'] = _sample_material(rng, rng.choice(fam['textures']), is_plane=False)
    free[shape] -= 1
    objects.append(obj)
  trajectory = str(rng.choice(fam['trajectories']))
  eyes, targets = _sample_trajectory(rng, trajectory, num_frames, room)
  key = _unit(rng) * [0.6, 0, 0.6] + [0, 1.0, 0]
  light_dirs = np.stack([key / np.linalg.norm(key), _unit(rng)])
  return dict(seed=int(seed), split=split, room=room, room_materials=room_mats, objects=objects,
              trajectory=trajectory, eyes=eyes, targets=targets, light_dirs=light_dirs,
              shape_families=sorted({o['shape'] for o in objects}),
              texture_families=sorted({TEXTURES[m['family']] for m in
                                       room_mats + [o['material'] for o in objects]}))


def _intrinsics(height: int, width: int) -> np.ndarray:
  f = 0.5 * width / np.tan(np.deg2rad(_FOV_DEG) / 2)
  return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float32)


def _pack(scene: dict) -> dict:
  """Scene -> fixed-shape float32 arrays for the jitted renderer (slots padded, inactive)."""
  fam = _family_set(scene['split'])
  mats = list(scene['room_materials'])
  groups = {}
  for shape in fam['shapes']:
    k = _SLOTS[shape]
    objs = [o for o in scene['objects'] if o['shape'] == shape]
    center, rot, size = np.zeros((k, 3)), np.tile(np.eye(3), (k, 1, 1)), np.ones((k, 3))
    active, mat = np.zeros(k, bool), np.zeros(k, np.int32)
    for i in range(k):   # one material row per slot (inactive ones too): fixed shapes, no retrace
      mat[i] = len(mats)
      mats.append(objs[i]['material'] if i < len(objs) else mats[0])
    for i, o in enumerate(objs):
      center[i], rot[i], size[i], active[i] = o['center'], o['rot'], o['size'], True
    kind = _KIND[shape]
    g = groups.setdefault(kind, dict(center=[], rot=[], size=[], active=[], mat=[]))
    for name, v in dict(center=center, rot=rot, size=size, active=active, mat=mat).items():
      g[name].append(v)
  groups = {kind: {n: np.concatenate(v).astype(np.float32 if n in ('center', 'rot', 'size')
                                                  else (bool if n == 'active' else np.int32))
                   for n, v in g.items()} for kind, g in groups.items()}
  material = {n: np.stack([np.asarray(m[n]) for m in mats]).astype(
      np.int32 if n == 'family' else np.float32) for n in mats[0]}
  return dict(groups=groups, material=material, room=scene['room'].astype(np.float32),
              light_dirs=scene['light_dirs'].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Ray casting (JAX). Rays: origins o [..., 3], directions d [..., 3] with camera-z component 1,
# so the ray parameter t of a hit IS its z-depth.
# ----------------------------------------------------------------------------------------------

_INF = 1e10


def _safe_div(a, b):
  return a / jnp.where(jnp.abs(b) < 1e-12, jnp.where(b < 0, -1e-12, 1e-12), b)


def _apply(m, v):
  """m [3,3] @ v [..., 3] as broadcast multiply-adds: fuses with neighbours, unlike a dot."""
  return v[..., 0:1] * m[:, 0] + v[..., 1:2] * m[:, 1] + v[..., 2:3] * m[:, 2]


def _hit_box(o, d, s):
  t1, t2 = _safe_div(-s - o, d), _safe_div(s - o, d)
  tnear, tfar = jnp.minimum(t1, t2), jnp.maximum(t1, t2)
  t_in, t_out = tnear.max(-1), tfar.min(-1)
  hit = (t_out >= t_in) & (t_in > _EPS)
  axis = jax.nn.one_hot(jnp.argmax(tnear, -1), 3)
  normal = -jnp.sign(d) * axis
  return jnp.where(hit, t_in, _INF), normal


def _hit_ellipsoid(o, d, s):
  os_, ds = o / s, d / s
  a, b, c = (ds * ds).sum(-1), (os_ * ds).sum(-1), (os_ * os_).sum(-1) - 1
  disc = b * b - a * c
  t = (-b - jnp.sqrt(jnp.maximum(disc, 0))) / a
  hit = (disc > 0) & (t > _EPS)
  p = o + t[..., None] * d
  return jnp.where(hit, t, _INF), p / (s * s)


def _hit_cylinder(o, d, s):
  r, h = s[0], s[1]
  a = d[..., 0] ** 2 + d[..., 2] ** 2
  b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
  c = o[..., 0] ** 2 + o[..., 2] ** 2 - r * r
  disc = b * b - a * c
  t_side = _safe_div(-b - jnp.sqrt(jnp.maximum(disc, 0)), a)
  y_side = o[..., 1] + t_side * d[..., 1]
  side_ok = (disc > 0) & (a > 1e-12) & (jnp.abs(y_side) <= h) & (t_side > _EPS)
  t_top, t_bot = _safe_div(h - o[..., 1], d[..., 1]), _safe_div(-h - o[..., 1], d[..., 1])
  t_cap = jnp.minimum(t_top, t_bot)
  pc = o + t_cap[..., None] * d
  cap_ok = (pc[..., 0] ** 2 + pc[..., 2] ** 2 <= r * r) & (t_cap > _EPS)
  t_side = jnp.where(side_ok, t_side, _INF)
  t_cap = jnp.where(cap_ok, t_cap, _INF)
  use_side = t_side <= t_cap
  t = jnp.minimum(t_side, t_cap)
  p = o + t[..., None] * d
  n_side = p * jnp.array([1.0, 0.0, 1.0])
  n_cap = jnp.stack([0 * t, jnp.where(t_top < t_bot, 1.0, -1.0), 0 * t], -1)
  return t, jnp.where(use_side[..., None], n_side, n_cap)


def _hit_cone(o, d, s):
  """Cone on the local y axis: base disk of radius s0 at y = -s1, apex at y = +s1."""
  rb, h = s[0], s[1]
  k2 = (rb / (2 * h)) ** 2
  w0, wd = h - o[..., 1], -d[..., 1]
  a = d[..., 0] ** 2 + d[..., 2] ** 2 - k2 * wd * wd
  b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2] - k2 * w0 * wd
  c = o[..., 0] ** 2 + o[..., 2] ** 2 - k2 * w0 * w0
  disc = b * b - a * c
  sq = jnp.sqrt(jnp.maximum(disc, 0))
  best = jnp.full(a.shape, _INF)
  for sign in (-1.0, 1.0):
    t = _safe_div(-b + sign * sq, a)
    w = w0 + t * wd
    ok = (disc > 0) & (t > _EPS) & (w >= 0) & (w <= 2 * h)
    best = jnp.minimum(best, jnp.where(ok, t, _INF))
  t_base = _safe_div(-h - o[..., 1], d[..., 1])
  pb = o + t_base[..., None] * d
  base_ok = (pb[..., 0] ** 2 + pb[..., 2] ** 2 <= rb * rb) & (t_base > _EPS)
  t_base = jnp.where(base_ok, t_base, _INF)
  use_side = best <= t_base
  t = jnp.minimum(best, t_base)
  p = o + t[..., None] * d
  n_side = jnp.stack([p[..., 0], k2 * (h - p[..., 1]), p[..., 2]], -1)
  n_base = jnp.zeros_like(p).at[..., 1].set(-1.0)
  return t, jnp.where(use_side[..., None], n_side, n_base)


def _hit_torus(o, d, s, steps: int = 48):
  """Torus around the local y axis (major radius s0, minor s1) by sphere tracing."""
  big, small = s[0], s[1]
  dn = jnp.linalg.norm(d, axis=-1)
  a, b = (d * d).sum(-1), (o * d).sum(-1)
  c = (o * o).sum(-1) - (big + small) ** 2
  disc = b * b - a * c
  sq = jnp.sqrt(jnp.maximum(disc, 0))
  t0, t1 = jnp.maximum((-b - sq) / a, 0.0), (-b + sq) / a

  def sdf(t):
    p = o + t[..., None] * d
    q = jnp.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2) - big
    return jnp.sqrt(q * q + p[..., 1] ** 2) - small

  t = jax.lax.fori_loop(0, steps, lambda _, t: t + sdf(t) / dn, t0)
  hit = (disc > 0) & (t <= t1) & (jnp.abs(sdf(t)) < 2e-3) & (t > _EPS)
  p = o + t[..., None] * d
  rho = jnp.sqrt(p[..., 0] ** 2 + p[..., 2] ** 2)
  scale = 1 - big / jnp.maximum(rho, 1e-6)
  normal = jnp.stack([p[..., 0] * scale, p[..., 1], p[..., 2] * scale], -1)
  return jnp.where(hit, t, _INF), normal


_HIT = {'box': _hit_box, 'ellipsoid': _hit_ellipsoid, 'cylinder': _hit_cylinder,
        'cone': _hit_cone, 'torus': _hit_torus}


def _hit_room(o, d, room):
  """Exit point of rays from inside the box [-rx, rx] x [0, ry] x [-rz, rz]; face id and normal."""
  lo = jnp.array([-room[0], 0.0, -room[2]])
  hi = jnp.array([room[0], room[1], room[2]])
  tfar = jnp.maximum(_safe_div(lo - o, d), _safe_div(hi - o, d))
  axis = jnp.argmin(tfar, -1)
  t = jnp.min(tfar, -1)
  positive = jnp.take_along_axis(d, axis[..., None], -1)[..., 0] > 0
  face = jnp.array([[2, 3], [0, 1], [4, 5]])[axis, positive.astype(jnp.int32)]
  normal = -jnp.sign(d) * jax.nn.one_hot(axis, 3)
  return t, face, normal


def _texture(p, m):
  """Texture value v in [0, 1] per pixel; p [..., 3] texture coords, m per-pixel material."""
  f = m['freq']
  x = p * f[..., None] + m['phase']
  checker = jnp.mod(jnp.floor(x).sum(-1), 2.0)
  along = (p * m['u']).sum(-1) * f
  stripes = (jnp.sin(2 * jnp.pi * (along + m['phase'][..., 0])) > 0).astype(p.dtype)
  gradient = jnp.clip(0.5 + 0.6 * jnp.sin(0.5 * along + m['phase'][..., 1] * 6.0), 0.0, 1.0)
  waves = jnp.sin(2 * jnp.pi * ((p[..., None, :] * m['noise_dirs']).sum(-1) * m['noise_freq']
                                + m['noise_phase']))
  noise = jnp.clip(0.5 + 0.45 * waves.sum(-1), 0.0, 1.0)
  dist = jnp.linalg.norm(p - m['center'], axis=-1) * f
  rings = (jnp.sin(2 * jnp.pi * (dist + m['phase'][..., 0])) > 0).astype(p.dtype)
  cell = x - jnp.floor(x) - 0.5
  dots = (jnp.linalg.norm(cell, axis=-1) < 0.38).astype(p.dtype)
  side = (p * m['w']).sum(-1) * f * 2.0
  tri = jnp.abs(side - jnp.floor(side) - 0.5)
  zigzag = (jnp.sin(2 * jnp.pi * (along + 0.8 * tri)) > 0).astype(p.dtype)
  table = jnp.stack([checker, stripes, gradient, noise, rings, dots, zigzag], -1)
  return jnp.take_along_axis(table, m['family'][..., None], -1)[..., 0]


@jax.jit
def _render(packed, w2c, intrinsics, pix):
  """Renders all rays at once. pix [H*W, 2] pixel (u, v); returns rgb [T,P,3] f32, depth [T,P]."""
  rot, trans = w2c[:, :3, :3], w2c[:, :3, 3]
  eye = -jnp.einsum('tji,tj->ti', rot, trans)                         # [T,3]
  fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
  d_cam = jnp.stack([(pix[:, 0] - cx) / fx, (pix[:, 1] - cy) / fy, jnp.ones(pix.shape[:1])], -1)
  d = sum(d_cam[None, :, j:j + 1] * rot[:, None, j, :] for j in range(3))  # R^T d_cam [T,P,3]
  o = jnp.broadcast_to(eye[:, None], d.shape)

  t_best, face, n_best = _hit_room(o, d, packed['room'])
  tex_p = o + t_best[..., None] * d                                   # room: world coords
  mat = face
  state = (t_best, n_best, tex_p, mat)
  for kind, g in packed['groups'].items():
    for k in range(g['active'].shape[0]):
      def hit(state, center=g['center'][k], rot_l=g['rot'][k], size=g['size'][k],
              mid=g['mat'][k], kind=kind):
        t_best, n_best, tex_p, mat = state
        ol, dl = _apply(rot_l, o - center), _apply(rot_l, d)
        t, n_l = _HIT[kind](ol, dl, size)
        closer = t < t_best
        return (jnp.where(closer, t, t_best),
                jnp.where(closer[..., None], _apply(rot_l.T, n_l), n_best),
                jnp.where(closer[..., None], ol + t[..., None] * dl, tex_p),
                jnp.where(closer, mid, mat))
      # A real branch on CPU: empty slots (about half of them) cost nothing.
      state = jax.lax.cond(g['active'][k], hit, lambda state: state, state)
  t_best, n_best, tex_p, mat = state

  m = jax.tree.map(lambda a: a[mat], packed['material'])
  v = _texture(tex_p, m)[..., None]
  albedo = (1 - v) * m['color_a'] + v * m['color_b']
  n = n_best / jnp.maximum(jnp.linalg.norm(n_best, axis=-1, keepdims=True), 1e-9)
  n = jnp.where((n * d).sum(-1, keepdims=True) > 0, -n, n)           # face the camera
  light = packed['light_dirs']
  shade = (0.35 + 0.55 * jnp.maximum((n * light[0]).sum(-1, keepdims=True), 0)
           + 0.25 * jnp.maximum((n * light[1]).sum(-1, keepdims=True), 0))
  return jnp.clip(albedo * shade, 0.0, 1.0), t_best


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> np.ndarray:
  v, u = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                     indexing='ij')
  return np.stack([u.ravel(), v.ravel()], -1)


def render_clip(seed: int, split: str, num_frames: int, height: int, width: int) -> dict[str, Any]:
  """Renders clip `seed` of `split`.

  Returns dict(rgb uint8 [T,H,W,3], depth float32 [T,H,W] (z-depth, world units),
  intrinsics float32 [3,3], world_to_camera float32 [T,4,4] (OpenCV axes)).
  """
  _check_split(split)
  for name, value in (('num_frames', num_frames), ('height', height), ('width', width)):
    if int(value) < 1:
      raise ValueError(f'{name} must be a positive integer, got {value!r}')
  scene = sample_scene(seed, split, num_frames)
  w2c = _look_at(scene['eyes'], scene['targets']).astype(np.float32)
  intrinsics = _intrinsics(height, width)
  rgb, depth = _render(_pack(scene), w2c, intrinsics, _pixel_grid(height, width))
  rgb = np.asarray(rgb).reshape(num_frames, height, width, 3)
  return dict(rgb=np.round(rgb * 255.0).astype(np.uint8),
              depth=np.asarray(depth, np.float32).reshape(num_frames, height, width),
              intrinsics=intrinsics, world_to_camera=w2c)
