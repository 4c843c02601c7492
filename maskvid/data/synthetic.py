"""Procedural multi-view video: the scenes of `maskvid.data.scenes`, seen by a moving camera.

One jitted JAX ray caster renders all pixels of all frames of a clip at once (analytic
ray/primitive intersections; sphere tracing only for the torus). Cameras, intrinsics and the
pixel grid come from `maskvid.geometry.camera`, so the dataset and the geometry code share one
convention:
  * World frame: right-handed, y up, the floor is the plane y = 0.
  * Camera frame: OpenCV, x right, y down, z forward. `world_to_camera[t] @ [X, 1]` maps a world
    point to camera frame t.
  * Intrinsics: pinhole `K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]` with the OpenCV pixel convention:
    the centre of pixel (row v, column u) is at image coordinates (u, v), so cx = (W - 1) / 2;
    a 50 degree horizontal field of view.
  * Depth: z-depth along the camera's optical axis (the camera-frame z of the visible surface
    point), NOT the Euclidean ray length. Unprojection is `X_cam = depth * K^-1 [u, v, 1]`.
    Every pixel sees a surface (the camera is inside a closed room), so depth is finite and > 0.
  * Lighting is fixed in the world (two directional lights + ambient, Lambertian, no specular), so a
    surface point has the same colour in every frame: colour consistency across views is exact up
    to pixel sampling.

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

from maskvid.geometry import camera
from maskvid.data.scenes import sample_scene
from maskvid.data.scenes import _FOV_DEG, _KIND, _SLOTS, _check_split, family_set

_EPS = 1e-4
_WORLD_UP = (0.0, 1.0, 0.0)


def _pack(scene: dict) -> dict:
  """Scene -> fixed-shape float32 arrays for the jitted renderer (slots padded, inactive).

  `object_rows[i]` is the material row of scene['objects'][i]: the id `_render` reports for the
  pixels that object covers.
  """
  fam = family_set(scene['split'])
  mats = list(scene['room_materials'])
  groups = {}
  object_rows = [None] * len(scene['objects'])
  for shape in fam['shapes']:
    k = _SLOTS[shape]
    indices = [i for i, o in enumerate(scene['objects']) if o['shape'] == shape]
    objs = [scene['objects'][i] for i in indices]
    for slot, i in enumerate(indices):
      object_rows[i] = len(mats) + slot
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
              light_dirs=scene['light_dirs'].astype(np.float32)), object_rows


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
  """Renders all rays at once. pix [H*W, 2] pixel (u, v) -> rgb [T,P,3] f32, depth [T,P] and
  the material row [T,P] int32 of the surface each ray hit (`_pack`'s object_rows)."""
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
  return jnp.clip(albedo * shade, 0.0, 1.0), t_best, mat


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> np.ndarray:
  """(u, v) of every pixel centre, float32 [H * W, 2] (row-major)."""
  u, v = camera.pixel_grid(height, width)
  return np.stack([u.ravel(), v.ravel()], -1).astype(np.float32)


def render_clip(seed: int, split: str, num_frames: int, height: int, width: int,
                speed: float = 1.0) -> dict[str, Any]:
  """Renders clip `seed` of `split`, its camera path scaled by `speed` (`scenes.scale_path`:
  0 = static camera, 1 = the sampled path).

  Returns dict(rgb uint8 [T,H,W,3], depth float32 [T,H,W] (z-depth, world units),
  intrinsics float32 [3,3], world_to_camera float32 [T,4,4] (OpenCV axes)).
  """
  _check_split(split)
  for name, value in (('num_frames', num_frames), ('height', height), ('width', width)):
    if int(value) < 1:
      raise ValueError(f'{name} must be a positive integer, got {value!r}')
  clip = render_scene(sample_scene(seed, split, num_frames, speed), height, width)
  del clip['object_id']
  return clip


def render_scene(scene: dict, height: int, width: int) -> dict[str, Any]:
  """Renders a scene description (`sample_scene`, possibly modified, e.g. `data.edits`).

  Returns `render_clip`'s dict plus object_id int32 [T,H,W]: the index into scene['objects']
  of the object each pixel sees, -1 for the room.
  """
  num_frames = len(scene['eyes'])
  w2c = np.stack([camera.look_at(e, t, up=_WORLD_UP)
                  for e, t in zip(scene['eyes'], scene['targets'])]).astype(np.float32)
  intrinsics = camera.intrinsics_from_fov(_FOV_DEG, height, width)
  packed, object_rows = _pack(scene)
  rgb, depth, row = _render(packed, w2c, intrinsics, _pixel_grid(height, width))
  rgb = np.asarray(rgb).reshape(num_frames, height, width, 3)
  row_to_object = np.full(len(packed['material']['family']), -1, np.int32)
  row_to_object[np.asarray(object_rows, np.int64)] = np.arange(len(object_rows), dtype=np.int32)
  return dict(rgb=np.round(rgb * 255.0).astype(np.uint8),
              depth=np.asarray(depth, np.float32).reshape(num_frames, height, width),
              intrinsics=intrinsics, world_to_camera=w2c,
              object_id=row_to_object[np.asarray(row)].reshape(num_frames, height, width))
