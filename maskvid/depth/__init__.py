"""Depth for novel-view synthesis: one interface, three sources.

`DepthEstimator.estimate(rgb uint8 [H,W,3] | [T,H,W,3]) -> z-depth float32 [H,W] | [T,H,W]`:
  * `GroundTruthDepth`: the renderer's depth for synthetic frames;
  * `load_depth_estimator(dir)`: the small DepthUNet trained here (`maskvid.depth.train`);
  * `load_external_depth(path)`: external weights (.safetensors / .npz) mapped onto the U-Net;
  * `DepthAnythingEstimator`: Depth Anything V2 from its released weights (docs/depth.md).
`make_depth_estimator('net:DIR' | 'external:PATH' | 'depth_anything:FILE')` parses the
command-line form.
"""
from maskvid.depth.base import DepthEstimator, GroundTruthDepth
from maskvid.depth.depth_anything import DepthAnythingEstimator, load_depth_anything
from maskvid.depth.estimator import UNetDepthEstimator, load_depth_estimator
from maskvid.depth.external import load_external_depth, make_depth_estimator, save_external_depth
