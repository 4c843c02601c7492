"""Forward warping by z-buffered nearest-pixel splatting (numpy, vectorised).

Each source pixel is unprojected with its depth, moved into the target camera and splatted
onto the nearest target pixel; when several land on one pixel the nearest (smallest z) wins.
The returned validity mask is False where the warped value should not be trusted:
  * holes: target pixels that received no splat (disocclusions, out-of-view regions, cracks);
  * uncertain depth: the winning source pixel sits on a depth discontinuity, i.e. its largest
    depth difference to a 4-neighbour divided by its depth exceeds `max_rel_depth_gradient`
    (such pixels straddle foreground and background: colour and depth are mixed), AND that
    depth ambiguity matters for this camera motion: projecting the pixel with the smallest
    and largest depth of its 4-neighbourhood lands more than `parallax_tol` pixels apart.
    So an identity or pure-rotation warp keeps every pixel;
  * see-through: both neighbours on opposite sides (left/right, up/down or a diagonal pair)
    hold splats nearer than the winner by more than `occlusion_rel_tol` (relative): background
    showing through a one-pixel crack of a magnified foreground surface.
Cracks: when the view magnifies a surface, nearest-pixel splats leave one-pixel gaps inside
it. With `crack_rel_tol` set, a gap (no splat, or a see-through pixel) whose two opposite
neighbours (left/right or up/down; or all four diagonal ones, for crossings of a horizontal and
a vertical crack) are valid and lie on one surface (depths within crack_rel_tol, relative) is
filled with their mean value and depth and counted valid.
Wider gaps and gaps between different surfaces (true disocclusions) stay invalid.
Invalid pixels get `fill`; the caller treats them as unknown.
"""
from typing import NamedTuple, Optional

import numpy as np
from scipy import ndimage

from maskvid.geometry.camera import project, relative_pose, transform_points, unproject


class WarpResult(NamedTuple):
  image: np.ndarray   # [H, W, C] warped values (fill where invalid), dtype of the input
  mask: np.ndarray    # [H, W] bool, True = valid
  depth: np.ndarray   # [H, W] float32 z-depth in the target camera (0 where no splat)


def depth_edges(depth: np.ndarray, max_rel_depth_gradient: float) -> np.ndarray:
  """Pixels on depth discontinuities: max |z - z_neighbour| / z over 4-neighbours > threshold.

  depth [H, W] -> bool [H, W]. Both sides of an edge are marked.
  """
  z = np.asarray(depth, np.float64)
  diff = np.zeros_like(z)
  dy = np.abs(np.diff(z, axis=0))
  dx = np.abs(np.diff(z, axis=1))
  diff[1:] = np.maximum(diff[1:], dy)
  diff[:-1] = np.maximum(diff[:-1], dy)
  diff[:, 1:] = np.maximum(diff[:, 1:], dx)
  diff[:, :-1] = np.maximum(diff[:, :-1], dx)
  with np.errstate(divide='ignore', invalid='ignore'):
    rel = diff / np.maximum(z, 1e-12)
  return rel > max_rel_depth_gradient


def forward_warp(image: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray,
                 src_world_to_camera: np.ndarray, dst_world_to_camera: np.ndarray, *,
                 dst_intrinsics: Optional[np.ndarray] = None, out_shape=None,
                 max_rel_depth_gradient: Optional[float] = 0.1,
                 occlusion_rel_tol: Optional[float] = 0.1,
                 parallax_tol: float = 0.5,
                 crack_rel_tol: Optional[float] = 0.05,
                 fill=0) -> WarpResult:
  """Warps one frame into another camera.

  Args:
    image: [H, W, C] (or [H, W]) source values, any dtype.
    depth: [H, W] z-depth of the source pixels; non-finite or <= 0 means unknown (not splatted).
    intrinsics: [3, 3] source intrinsics (also the target's unless dst_intrinsics is given).
    src_world_to_camera, dst_world_to_camera: [4, 4] poses.
    out_shape: (H', W') of the target image; defaults to the source size.
    max_rel_depth_gradient: see module docstring; None disables the discontinuity test.
    occlusion_rel_tol: see module docstring; None disables the see-through test.
    parallax_tol: pixels; see module docstring.
    crack_rel_tol: see module docstring; None disables crack filling.
    fill: value written where the result is invalid.
  Returns:
    WarpResult(image [H', W', C], mask bool [H', W'], depth float32 [H', W']).
  """
  img = np.asarray(image)
  squeeze = img.ndim == 2
  if squeeze:
    img = img[..., None]
  z = np.asarray(depth, np.float64)
  if img.ndim != 3 or z.shape != img.shape[:2]:
    raise ValueError(f'image must be [H, W, C] and depth [H, W] of the same H, W; got image '
                     f'{np.shape(image)}, depth {np.shape(depth)}')
  h, w = z.shape
  ho, wo = out_shape if out_shape is not None else (h, w)
  k_dst = intrinsics if dst_intrinsics is None else dst_intrinsics

  src_ok = np.isfinite(z) & (z > 0)
  z_safe = np.where(src_ok, z, 1.0)
  rel = relative_pose(src_world_to_camera, dst_world_to_camera)
  points = transform_points(rel, unproject(z_safe, intrinsics))
  uv, zt = project(points, k_dst)
  uncertain = np.zeros_like(src_ok)
  if max_rel_depth_gradient is not None:
    uncertain = _ambiguous_edges(z, src_ok, rel, intrinsics, k_dst, max_rel_depth_gradient,
                                 parallax_tol)
  out, out_depth, hit, valid = _splat_nearest(img, uv, zt, src_ok, uncertain, (ho, wo), fill)
  fillable = ~hit
  if occlusion_rel_tol is not None:
    see_through = _see_through(np.where(hit, out_depth, np.inf), occlusion_rel_tol)
    valid &= ~see_through
    fillable |= see_through
  if crack_rel_tol is not None:
    _fill_cracks(out, out_depth, valid, fillable, crack_rel_tol)
  out[~valid] = fill
  if squeeze:
    out = out[..., 0]
  return WarpResult(out, valid, out_depth.astype(np.float32))


def _ambiguous_edges(z, src_ok, rel, intrinsics, k_dst, max_rel_depth_gradient, parallax_tol):
  """bool [H, W]: source pixels on a depth discontinuity whose target position moves by more
  than `parallax_tol` pixels between the near and far depth of their neighbourhood."""
  uncertain = depth_edges(np.where(src_ok, z, 0.0), max_rel_depth_gradient) & src_ok
  if not uncertain.any():
    return uncertain
  cross = ndimage.generate_binary_structure(2, 1)
  z_lo = ndimage.minimum_filter(np.where(src_ok, z, np.inf), footprint=cross, mode='nearest')
  z_hi = ndimage.maximum_filter(np.where(src_ok, z, -np.inf), footprint=cross, mode='nearest')
  uv_lo, _ = project(transform_points(rel, unproject(z_lo, intrinsics)), k_dst)
  uv_hi, _ = project(transform_points(rel, unproject(z_hi, intrinsics)), k_dst)
  spread = np.linalg.norm(uv_hi - uv_lo, axis=-1)
  # nan spread: one of the extremes falls behind the camera -> certainly ambiguous.
  return uncertain & ~(spread <= parallax_tol)


def _splat_nearest(img, uv, zt, src_ok, uncertain, out_shape, fill):
  """Z-buffered nearest-pixel splat of img [H, W, C] to target positions uv [H, W, 2] at
  depths zt [H, W] -> (image [H', W', C], depth [H', W'], hit, valid bool [H', W']): hit =
  some source pixel landed, valid = the nearest one that landed is not `uncertain`."""
  ho, wo = out_shape
  with np.errstate(invalid='ignore'):
    # Pixel centres sit at integers: the nearest one is floor(u + 0.5).
    col = np.floor(uv[..., 0] + 0.5)
    row = np.floor(uv[..., 1] + 0.5)
    ok = src_ok & (zt > 1e-9) & (col >= 0) & (col < wo) & (row >= 0) & (row < ho)
  src_idx = np.flatnonzero(ok)
  dst_idx = (row.ravel()[src_idx] * wo + col.ravel()[src_idx]).astype(np.int64)
  zs = zt.ravel()[src_idx]
  # Sort by target pixel, then depth: the first entry of each run is the z-test winner.
  order = np.lexsort((zs, dst_idx))
  dst_sorted = dst_idx[order]
  first = np.ones(dst_sorted.shape, bool)
  first[1:] = dst_sorted[1:] != dst_sorted[:-1]
  win_dst = dst_sorted[first]
  win_src = src_idx[order][first]
  out_depth = np.zeros(ho * wo, np.float64)
  out_depth[win_dst] = zs[order][first]
  hit = np.zeros(ho * wo, bool)
  hit[win_dst] = True
  valid = hit.copy()
  valid[win_dst] &= ~uncertain.ravel()[win_src]
  out = np.empty((ho * wo, img.shape[-1]), img.dtype)
  out[...] = fill
  out[win_dst] = img.reshape(-1, img.shape[-1])[win_src]
  return (out.reshape(ho, wo, -1), out_depth.reshape(ho, wo), hit.reshape(ho, wo),
          valid.reshape(ho, wo))


def _see_through(z: np.ndarray, tol: float) -> np.ndarray:
  """[H, W] depth (inf = empty) -> pixels flanked on two opposite sides by nearer splats."""
  h, w = z.shape
  zp = np.pad(z, 1, constant_values=np.inf)
  def nb(dy, dx):
    return zp[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
  far = lambda n: np.isfinite(z) & (z > n * (1.0 + tol))
  out = np.zeros(z.shape, bool)
  for (ay, ax) in ((0, 1), (1, 0), (1, 1), (1, -1)):
    out |= far(nb(ay, ax)) & far(nb(-ay, -ax))
  return out


def _shifted(a: np.ndarray, dy: int, dx: int, pad) -> np.ndarray:
  """b[i, j] = a[i + dy, j + dx] (pad outside)."""
  h, w = a.shape[:2]
  p = np.pad(a, ((1, 1), (1, 1)) + ((0, 0),) * (a.ndim - 2), constant_values=pad)
  return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _fill_cracks(out, depth, valid, fillable, tol) -> None:
  """In place: one-pixel gaps flanked by one surface get the mean of the flanking pixels."""
  todo = fillable & ~valid
  if not todo.any():
    return
  z = np.where(valid, depth, np.nan)
  vals = out.astype(np.float64)
  new_val = np.zeros_like(vals)
  new_z = np.zeros_like(depth)
  done = np.zeros_like(valid)
  def flank(offsets):
    zs = [_shifted(z, dy, dx, np.nan) for dy, dx in offsets]
    with np.errstate(invalid='ignore'):
      lo, hi = np.fmin.reduce(zs), np.fmax.reduce(zs)
      same = np.all([np.isfinite(q) for q in zs], 0) & (hi - lo <= tol * lo)
    return same, zs, [_shifted(vals, dy, dx, 0.0) for dy, dx in offsets]
  for offsets in (((0, 1), (0, -1)), ((1, 0), (-1, 0)), ((1, 1), (-1, -1), (1, -1), (-1, 1))):
    same, zs, vs = flank(offsets)
    take = todo & ~done & same
    if take.any():
      new_val[take] = np.mean([v[take] for v in vs], 0)
      new_z[take] = np.mean([q[take] for q in zs], 0)
      done |= take
  if np.issubdtype(out.dtype, np.integer):
    new_val = np.round(new_val)
  out[done] = new_val[done].astype(out.dtype)
  depth[done] = new_z[done]
  valid |= done


def warp_to_cameras(image: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray,
                    src_world_to_camera: np.ndarray, dst_world_to_camera: np.ndarray,
                    **kwargs) -> WarpResult:
  """forward_warp into each of T target cameras [T, 4, 4] -> WarpResult with a leading T axis."""
  dst = np.asarray(dst_world_to_camera)
  if dst.ndim != 3 or dst.shape[1:] != (4, 4):
    raise ValueError(f'dst_world_to_camera must be [T, 4, 4], got shape {dst.shape}')
  results = [forward_warp(image, depth, intrinsics, src_world_to_camera, d, **kwargs) for d in dst]
  return WarpResult(*(np.stack(x) for x in zip(*results)))
