"""Pinhole cameras, camera paths and forward warping (OpenCV axes: x right, y down, z forward).

Pixel convention (OpenCV, the same as maskvid.data.synthetic): the centre of pixel (row i, col j)
is at image coordinates (u, v) = (j, i), so `intrinsics_from_fov` puts the principal point at
((W - 1) / 2, (H - 1) / 2). Depth is z-depth (camera-frame z), not ray length.
"""
from maskvid.geometry.camera import (camera_to_world, compose, intrinsics_from_fov, invert_pose,
                                     look_at, pixel_grid, project, relative_pose, scale_intrinsics,
                                     transform_points, unproject, world_to_camera)
from maskvid.geometry.trajectory import TRAJECTORIES, load_poses_json, make_trajectory
from maskvid.geometry.warp import WarpResult, depth_edges, forward_warp, warp_to_cameras
