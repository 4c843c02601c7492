"""Roofline step-time estimate of the diffusion train step on one chip of a TPU slice (used by the
compile job, `maskvid.aot`): analytic FLOPs and bytes against the chip's peaks in
`maskvid.topology`. An estimate, not a measurement; its method is returned with it.
"""
from maskvid import topology as topology_lib
from maskvid.model import model as model_lib


def train_step(config, mesh_sizes: dict, num_slices: int, slice_: topology_lib.Slice,
             params: int) -> dict:
  """Step-time estimate of the train step per chip from FLOPs, HBM traffic and collectives.

  compute   matmul FLOPs the chip executes (`model.flops_per_token`, x4/3 with remat=full,
            which recomputes the forward pass) at the chip's bf16 peak
  hbm       the state read and written once (params f32, EMA, Adam moments, gradients), plus
            activations: 34 bytes per token per width per block forward (Korthikanti et al.
            2022, bf16, no attention logits) x3 for backward (x4 with remat=full); the XLA
            attention path adds its [H, N, N] logits (bf16, written and read, forward and back)
  ici       FSDP: params all-gathered twice (forward, backward) and gradients reduce-scattered,
            f32; data axis within the slice: gradient all-reduce; tensor axis: 4 activation
            all-reduces per block; each moving (n-1)/n of its bytes at the chip's ICI bandwidth
  dcn       across slices: the gradient all-reduce of each chip's shard at 25 GB/s per host
  step      est_step_s = compute + hbm + ici + dcn (nothing overlapped, every unit at peak);
            est_step_s_overlap = their max (perfect overlap: no run is faster). MFU = model
            FLOPs (6P + attention, no remat) / (step x peak).
  """
  chip = slice_.chip
  chips = slice_.chips * num_slices
  d, f, t = mesh_sizes['data'], mesh_sizes['fsdp'], mesh_sizes['tensor']
  batch = int(config.train.batch_size)
  n_tok = model_lib.num_tokens(config)
  tokens_per_chip = batch * n_tok / chips * t          # each tensor group shares its tokens
  model_flops = model_lib.flops_per_token(config) * batch * n_tok / chips
  remat = config.model.remat
  hw_flops = model_flops * (4 / 3 if remat == 'full' else 1.0)
  width, depth, heads = int(config.model.width), int(config.model.depth), int(config.model.num_heads)
  state_bytes = params * (4 + 4 + 8 + 4) / (f * t)      # params, EMA, Adam mu/nu, gradients
  act_passes = 4 if remat == 'full' else 3
  act_bytes = depth * tokens_per_chip * width / t * 34 * act_passes
  if config.model.attention == 'xla':
    seqs_per_chip = batch / chips * t
    act_bytes += depth * seqs_per_chip * heads / t * n_tok * n_tok * 2 * 2 * act_passes
  hbm_bytes = 2 * state_bytes + act_bytes
  frac = lambda n: (n - 1) / n if n > 1 else 0.0
  ici_bytes = 3 * 4 * params / t * frac(f)                              # FSDP
  ici_bytes += 2 * 4 * params / (f * t) * frac(d // num_slices)          # data within a slice
  ici_bytes += depth * 4 * 2 * tokens_per_chip * width * 2 * frac(t)     # tensor all-reduces
  dcn_bytes = 2 * 4 * params / (f * t) * frac(num_slices)
  dcn_bw = topology_lib.DCN_BW_PER_HOST / topology_lib.CHIPS_PER_HOST
  terms = dict(compute_s=hw_flops / chip.peak_flops, hbm_s=hbm_bytes / chip.hbm_bw,
               ici_s=ici_bytes / chip.ici_bw, dcn_s=dcn_bytes / dcn_bw)
  overlap = max(terms.values())
  serial = sum(terms.values())
  return dict(
      model_flops_per_chip=model_flops, hardware_flops_per_chip=hw_flops,
      hbm_bytes_per_chip=hbm_bytes, ici_bytes_per_chip=ici_bytes, dcn_bytes_per_chip=dcn_bytes,
      **terms, est_step_s=serial, est_step_s_overlap=overlap,
      est_mfu=model_flops / (serial * chip.peak_flops),
      est_mfu_overlap=model_flops / (overlap * chip.peak_flops),
      clips_per_s=batch / serial, bound=max(terms, key=terms.get).removesuffix('_s'),
      est_method=('roofline per chip from analytic FLOPs and bytes (maskvid.roofline), every '
                  'unit at its peak: est_step_s = compute at the bf16 peak + HBM traffic + ICI '
                  'collectives + DCN collectives, none overlapped; est_step_s_overlap = the '
                  'largest of them (perfect overlap, a bound no run beats)'))
