"""Frame-wise convolutional KL autoencoder (Flax Linen).

The layer layout mirrors the widely used LDM / diffusers `AutoencoderKL` (conv_in, down blocks of
ResNet blocks + stride-2 downsamplers, a mid block, GroupNorm + SiLU + conv_out, 1x1 quant convs),
and submodules are named after it (`down_blocks_0/resnets_1/conv1`), so external weights map onto
this tree by a mechanical rename (see `maskvid/vae/external.py`).

Frames are encoded independently: time is folded into the batch, so a single (e.g. warped) frame
can be encoded on its own and the latent of frame t never depends on frame t' != t.
Downsampling factor = 2 ** (len(channel_multipliers) - 1): (1, 2, 2) -> 4x, (1, 2, 4, 4) -> 8x.
"""
from typing import Sequence

import einops
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from maskvid import fileio
from maskvid import workdir
from maskvid.train import checkpoint

# diffusers/LDM use eps=1e-6 in every GroupNorm of the VAE; matching it keeps loaded weights exact.
_NORM_EPS = 1e-6
# Posterior log-variance clip (as in LDM) keeps exp(logvar) finite early in training.
_LOGVAR_RANGE = (-30.0, 20.0)


class GroupNorm(nn.Module):
  """`flax.linen.GroupNorm` (same params `scale`, `bias`; same E[x^2] - E[x]^2 statistics) as
  per-channel sums followed by a per-channel affine map. [N,H,W,C] -> same.

  Why not nn.GroupNorm: XLA:CPU runs its grouped reductions ~2.7x slower (forward + backward at
  32x32x16), and the VAE's full-resolution layers are mostly normalisation and SiLU.
  """
  num_groups: int
  epsilon: float = _NORM_EPS

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    g = self.num_groups
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    flat = x.reshape(n, h * w, c)
    count = h * w * (c // g)
    mean = flat.sum(1).reshape(n, g, -1).sum(-1) / count                  # [N, G]
    mean_sq = (flat * flat).sum(1).reshape(n, g, -1).sum(-1) / count
    inv_std = lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + self.epsilon)
    a = jnp.repeat(inv_std, c // g, axis=1) * scale                       # [N, C]
    b = bias - jnp.repeat(mean, c // g, axis=1) * a
    return x * a[:, None, None, :] + b[:, None, None, :]


def _group_norm(groups: int, channels: int, name: str) -> GroupNorm:
  if channels % groups:
    raise ValueError(f'norm_groups={groups} must divide every channel count; got {channels} '
                     f'channels in {name}')
  return GroupNorm(num_groups=groups, name=name)


class ResnetBlock(nn.Module):
  """GroupNorm-SiLU-Conv twice, plus a 1x1 shortcut when the channel count changes. [N,H,W,C]."""
  out_channels: int
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    in_channels = x.shape[-1]
    h = nn.silu(_group_norm(self.norm_groups, in_channels, 'norm1')(x))
    h = nn.Conv(self.out_channels, (3, 3), padding=1, name='conv1')(h)
    h = nn.silu(_group_norm(self.norm_groups, self.out_channels, 'norm2')(h))
    h = nn.Conv(self.out_channels, (3, 3), padding=1, name='conv2')(h)
    if in_channels != self.out_channels:
      x = nn.Conv(self.out_channels, (1, 1), name='conv_shortcut')(x)
    return x + h


class AttentionBlock(nn.Module):
  """Single-head spatial self-attention with a residual (the VAE mid block's). [N,H,W,C]."""
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    y = _group_norm(self.norm_groups, c, 'group_norm')(x)
    y = einops.rearrange(y, 'n h w c -> n (h w) c')
    q = nn.Dense(c, name='to_q')(y)
    k = nn.Dense(c, name='to_k')(y)
    v = nn.Dense(c, name='to_v')(y)
    # Add a singleton head axis for jax.nn.dot_product_attention's [N, L, heads, D] layout.
    y = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None])[:, :, 0]
    y = nn.Dense(c, name='to_out_0')(y)
    return x + einops.rearrange(y, 'n (h w) c -> n h w c', h=h, w=w)


class MidBlock(nn.Module):
  """ResNet, optional attention, ResNet at the lowest resolution. [N,h,w,C] -> same."""
  channels: int
  norm_groups: int
  attention: bool

  @nn.compact
  def __call__(self, x):
    x = ResnetBlock(self.channels, self.norm_groups, name='resnets_0')(x)
    if self.attention:
      x = AttentionBlock(self.norm_groups, name='attentions_0')(x)
    return ResnetBlock(self.channels, self.norm_groups, name='resnets_1')(x)


class Downsample(nn.Module):
  """Stride-2 3x3 conv with asymmetric (0, 1) padding, exactly as LDM's. [N,H,W,C] -> [N,H/2,W/2,C]."""

  @nn.compact
  def __call__(self, x):
    return nn.Conv(x.shape[-1], (3, 3), strides=2, padding=((0, 1), (0, 1)), name='conv')(x)


class _ConvParams(nn.Module):
  """The parameters of `nn.Conv(features, (3, 3))` (same names, shapes and initialisers)."""
  features: int

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', nn.linear.default_kernel_init,
                        (3, 3, in_features, self.features), jnp.float32)
    return kernel, self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)


# Nearest 2x upsampling then a 3x3 conv, per output phase p (row or column parity): the three
# taps fall on two source pixels, offsets (-1, 0) for p = 0 and (0, +1) for p = 1.
_PHASE_TAPS = ((0,), (1, 2)), ((0, 1), (2,))
_PHASE_PAD = (1, 0), (0, 1)


def _phase_kernel(kernel, p: int, q: int):
  """The 2x2 kernel [2,2,Cin,Cout] of output phase (p, q): the 3x3 taps summed per source pixel."""
  rows = jnp.stack([sum(kernel[i] for i in taps) for taps in _PHASE_TAPS[p]])      # [2,3,Ci,Co]
  return jnp.stack([sum(rows[:, j] for j in taps) for taps in _PHASE_TAPS[q]], axis=1)


class Upsample(nn.Module):
  """Nearest 2x upsampling then a 3x3 conv (LDM's). [N,H,W,C] -> [N,2H,2W,C].

  Computed as four 2x2 convs on the low-resolution input, one per output phase, with kernels
  summed from the 3x3 one: the same function and parameters (`conv/kernel`, `conv/bias`) with
  4/9 of the multiply-adds and no upsampled intermediate.
  """

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    kernel, bias = _ConvParams(c, name='conv')(c)
    phases = jnp.stack([jnp.stack([
        lax.conv_general_dilated(x, _phase_kernel(kernel, p, q), (1, 1),
                                 (_PHASE_PAD[p], _PHASE_PAD[q]),
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        for q in range(2)]) for p in range(2)])                # [2(p), 2(q), N, H, W, C]
    return einops.rearrange(phases, 'p q n h w c -> n (h p) (w q) c') + bias


class DownBlock(nn.Module):
  """`num_res_blocks` ResNet blocks, then (optionally) a 2x downsampler."""
  channels: int
  num_res_blocks: int
  norm_groups: int
  downsample: bool

  @nn.compact
  def __call__(self, x):
    for j in range(self.num_res_blocks):
      x = ResnetBlock(self.channels, self.norm_groups, name=f'resnets_{j}')(x)
    return Downsample(name='downsamplers_0')(x) if self.downsample else x


class UpBlock(nn.Module):
  """`num_res_blocks` ResNet blocks, then (optionally) a 2x upsampler."""
  channels: int
  num_res_blocks: int
  norm_groups: int
  upsample: bool

  @nn.compact
  def __call__(self, x):
    for j in range(self.num_res_blocks):
      x = ResnetBlock(self.channels, self.norm_groups, name=f'resnets_{j}')(x)
    return Upsample(name='upsamplers_0')(x) if self.upsample else x


class Encoder(nn.Module):
  """[N,H,W,3] -> [N,H/f,W/f,2*latent_channels] (mean and logvar stacked on channels)."""
  latent_channels: int
  base_channels: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  norm_groups: int
  mid_attention: bool

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.base_channels, (3, 3), padding=1, name='conv_in')(x)
    levels = len(self.channel_multipliers)
    for i, mult in enumerate(self.channel_multipliers):
      x = DownBlock(self.base_channels * mult, self.num_res_blocks, self.norm_groups,
                    downsample=i < levels - 1, name=f'down_blocks_{i}')(x)
    x = MidBlock(x.shape[-1], self.norm_groups, self.mid_attention, name='mid_block')(x)
    x = nn.silu(_group_norm(self.norm_groups, x.shape[-1], 'conv_norm_out')(x))
    return nn.Conv(2 * self.latent_channels, (3, 3), padding=1, name='conv_out')(x)


class Decoder(nn.Module):
  """[N,h,w,latent_channels] -> [N,h*f,w*f,3] (unbounded; trained towards [-1, 1])."""
  base_channels: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  norm_groups: int
  mid_attention: bool

  @nn.compact
  def __call__(self, z):
    mults = tuple(reversed(self.channel_multipliers))
    x = nn.Conv(self.base_channels * mults[0], (3, 3), padding=1, name='conv_in')(z)
    x = MidBlock(x.shape[-1], self.norm_groups, self.mid_attention, name='mid_block')(x)
    for i, mult in enumerate(mults):
      # One more ResNet block per level than the encoder, as in LDM.
      x = UpBlock(self.base_channels * mult, self.num_res_blocks + 1, self.norm_groups,
                  upsample=i < len(mults) - 1, name=f'up_blocks_{i}')(x)
    x = nn.silu(_group_norm(self.norm_groups, x.shape[-1], 'conv_norm_out')(x))
    return nn.Conv(3, (3, 3), padding=1, name='conv_out')(x)


def _check_frames(frames, name: str, channels: int | None = None):
  if frames.ndim != 5 or (channels is not None and frames.shape[-1] != channels):
    want = f'[B,T,H,W,{channels}]' if name == 'frames' else f'[B,T,h,w,{channels}]'
    raise ValueError(f'{name} must have shape {want}, got {tuple(frames.shape)}')


class AutoencoderKL(nn.Module):
  """KL autoencoder over video frames `[B,T,H,W,3]` in [-1, 1], applied frame by frame.

  Methods (call with `module.apply(params, x, method=...)`):
    encode(frames [B,T,H,W,3]) -> (mean, logvar), each [B,T,H/f,W/f,latent_channels]
    decode(z [B,T,h,w,latent_channels]) -> frames [B,T,h*f,w*f,3]
    __call__(frames, sample_posterior=False, noise=None) -> (reconstruction, mean, logvar);
      sampling draws z = mean + std * noise, noise [B,T,h,w,c] given or drawn from the rng
      stream 'sample'.
  """
  latent_channels: int = 4
  base_channels: int = 32
  channel_multipliers: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  norm_groups: int = 8
  mid_attention: bool = False
  # A linear path pixels <-> latents (f x f patches, like a learned PCA) added to the deep path.
  # Deep conv AEs learn high-frequency texture slowly; the linear path makes the latent informative
  # from the first steps and the ResNets learn the non-linear remainder. Not part of the
  # diffusers layout, so external weights need linear_skip=False.
  linear_skip: bool = False

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.channel_multipliers) - 1)

  def setup(self):
    if not 1 <= self.latent_channels:
      raise ValueError(f'latent_channels must be >= 1, got {self.latent_channels}')
    if not self.channel_multipliers:
      raise ValueError('channel_multipliers must be a non-empty sequence')
    arch = dict(base_channels=self.base_channels,
                channel_multipliers=tuple(self.channel_multipliers),
                num_res_blocks=self.num_res_blocks, norm_groups=self.norm_groups,
                mid_attention=self.mid_attention)
    self.encoder = Encoder(self.latent_channels, **arch)
    self.decoder = Decoder(**arch)
    self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1))
    self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1))
    if self.linear_skip:
      f = self.downsample_factor
      self.patch_in = nn.Conv(2 * self.latent_channels, (f, f), strides=f, padding='VALID')
      self.patch_out = nn.Conv(3 * f * f, (1, 1), kernel_init=nn.initializers.zeros)

  def encode(self, frames):
    _check_frames(frames, 'frames', 3)
    f = self.downsample_factor
    b, t, h, w, _ = frames.shape
    if h % f or w % f:
      raise ValueError(f'frame height/width must be divisible by the downsample factor {f}, '
                       f'got {h}x{w}')
    x = einops.rearrange(frames, 'b t h w c -> (b t) h w c')
    moments = self.quant_conv(self.encoder(x))
    if self.linear_skip:
      moments = moments + self.patch_in(x)
    moments = einops.rearrange(moments, '(b t) h w c -> b t h w c', b=b, t=t)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *_LOGVAR_RANGE)

  def decode(self, z):
    _check_frames(z, 'z', self.latent_channels)
    b, t = z.shape[:2]
    x = einops.rearrange(z, 'b t h w c -> (b t) h w c')
    out = self.decoder(self.post_quant_conv(x))
    if self.linear_skip:
      f = self.downsample_factor
      out = out + einops.rearrange(self.patch_out(x), 'n h w (p q c) -> n (h p) (w q) c',
                                   p=f, q=f)
    x = out
    return einops.rearrange(x, '(b t) h w c -> b t h w c', b=b, t=t)

  def __call__(self, frames, sample_posterior: bool = False, noise=None):
    mean, logvar = self.encode(frames)
    z = mean
    if sample_posterior:
      if noise is None:
        noise = jax.random.normal(self.make_rng('sample'), mean.shape, mean.dtype)
      elif noise.shape != mean.shape:
        raise ValueError(f'noise must have the latent shape {mean.shape}, got {noise.shape}')
      z = mean + jnp.exp(0.5 * logvar) * noise
    return self.decode(z), mean, logvar


def from_config(vae_config) -> AutoencoderKL:
  """Builds the module from `config.vae` (a ConfigDict or a plain dict, e.g. from config.json)."""
  get = vae_config.get
  return AutoencoderKL(
      latent_channels=int(vae_config['latent_channels']),
      base_channels=int(vae_config['base_channels']),
      channel_multipliers=tuple(int(m) for m in vae_config['channel_multipliers']),
      num_res_blocks=int(vae_config['num_res_blocks']),
      norm_groups=int(vae_config['norm_groups']),
      mid_attention=bool(get('mid_attention', False)),
      linear_skip=bool(get('linear_skip', False)))


def load_vae(vae_dir: str):
  """`(module, params)` of a trained VAE: the module from vae_dir/config.json, the params of its
  newest readable checkpoint (on one device; the optimizer state is not read)."""
  if not fileio.path(vae_dir).is_dir():
    raise FileNotFoundError(f'VAE directory {vae_dir!r} does not exist (run the vae stage first)')
  config = workdir.load_config(vae_dir, 'VAE')
  module = from_config(config.vae)
  res = int(config.data.resolution)
  target = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, res, res, 3)))
  return module, checkpoint.restore_subtree(vae_dir, 'params', target, 'vae stage')
