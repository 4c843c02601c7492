"""Pinhole cameras, camera paths and forward warping (OpenCV convention: x right, y down, z forward).

Pixel convention: pixel (row i, col j) covers [j, j+1) x [i, i+1) in continuous image coordinates,
so its centre is (u, v) = (j + 0.5, i + 0.5) and `intrinsics_from_fov` puts the principal point at
(W / 2, H / 2). Depth is z-depth (distance along the optical axis), not ray length.
"""
from maskvid.geometry.camera import (camera_to_world, compose, intrinsics_from_fov, invert_pose,
                                     look_at, pixel_grid, project, relative_pose, scale_intrinsics,
                                     transform_points, unproject, world_to_camera)
from maskvid.geometry.trajectory import TRAJECTORIES, load_poses_json, make_trajectory
from maskvid.geometry.warp import WarpResult, depth_edges, forward_warp, warp_to_cameras
