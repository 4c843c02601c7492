"""Video data for maskvid: a procedural multi-view renderer, real-video sources, ArrayRecord
storage, grain loaders.

Modules:
  scenes        scene sampling, camera paths and their speed (`scale_path`, `clip_speed`).
  synthetic     `render_clip(seed, split, ...)`: deterministic textured 3D scenes with depth + cameras.
  storage       `ensure_dataset(config, data_dir)`: the render job (re-exports the two below).
  records       the clip record format, `ClipSource(data_dir, split)`.
  sources       `open_source(config, data_dir, split)`, `source_splits`, `held_out` (holdout.py).
  preview       the dataset's preview PNG.
  pipeline      `make_loader(source, ...)`: shuffle, clip sampling, resize, batch, per-process shard.
  video_folder  `VideoFolderSource(video_dir, num_frames, resolution)`: a folder of user .mp4 files.
  tfds_source   `TfdsVideoSource(name, split, ...)`: any prepared TFDS video dataset.
  edits         `render_edit_pair(seed, split, ...)`: a clip rendered twice, one object edited.
"""
