"""Where the train step's time goes: a `jax.profiler` trace of a few steps, read into a table.

Usage:
  python -m maskvid.bench.profile --config=configs/tiny.py --steps=3        # CPU dry run
  python -m maskvid.bench.profile --config=configs/pretrain.py --steps=5    # one GPU (gpu_check.sh)

Traces `--steps` compiled train steps (random latents, after `--warmup`) into `--trace_dir`
(Perfetto JSON; open it in ui.perfetto.dev or TensorBoard), then attributes every XLA op event
of the step's module to a category through the compiled HLO: each top-level instruction's
opcode, custom-call target and `op_name` metadata (the Flax module path, with `jvp(...)` for the
forward pass and `transpose(jvp(...))` for the backward one):

  attention core     softmax(QK^T)V: cuDNN/flash custom calls, or ops under `attn/` that are
                     not the q/k/v/out projections or the q/k norms (logits, softmax, weighted sum)
  matmul             every other dot / convolution / GEMM (projections, MLP, adaLN, embeddings)
  norm / modulation / elementwise   the rest of the transformer (RMS norms, RoPE, adaLN shift /
                     scale / gate, activations, residual adds, layout copies)
  optimizer + EMA    ops of the step outside the model (Adam, the EMA, gradient clipping)
  noise / masks / loss   time and noise sampling, the training masks, the loss reduction
  collectives        all-reduce / all-gather / reduce-scatter / ...

Shares are of the summed op time (ops may overlap on a multi-threaded CPU); `host gap` is the
step's wall time during which no op of the step ran. The step time is the traced steps' wall
time divided by their number.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import time

from absl import app
from absl import flags

from maskvid.bench import common

CATEGORIES = ('attention core', 'matmul', 'norm / modulation / elementwise', 'optimizer + EMA',
              'noise / masks / loss', 'collectives', 'other')
_COLLECTIVES = re.compile(r'^(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all'
                          r'|collective-broadcast)')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+([\w\-]+)\(')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_ATTENTION_CALL = re.compile(r'fmha|flash|attention', re.I)
_GEMM_CALL = re.compile(r'gemm|cublas|matmul', re.I)
_PROJECTION = re.compile(r'/attn/(qkv|q|k|v|out|q_norm|k_norm)/')
_NOISE = re.compile(r'sample_patch_masks|_normal|_uniform|threefry|random_bits|loss|sample_t')


def hlo_instructions(hlo_text: str) -> dict:
  """Compiled HLO text -> {instruction name: (opcode, op_name, custom_call_target)}."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    op_name, target = _OP_NAME.search(line), _TARGET.search(line)
    out[m.group(1)] = (m.group(2), op_name.group(1) if op_name else '',
                       target.group(1) if target else '')
  return out


def categorize(opcode: str, op_name: str, target: str = '') -> tuple[str, str]:
  """-> (category in CATEGORIES, direction 'fwd' | 'bwd' | '')."""
  direction = 'bwd' if 'transpose(jvp(' in op_name else ('fwd' if 'jvp(' in op_name else '')
  in_model = 'VideoTransformer' in op_name
  last = op_name.rsplit('/', 1)[-1]
  if _COLLECTIVES.match(opcode):
    return 'collectives', direction
  if _ATTENTION_CALL.search(target) or (
      '/attn/' in op_name and not _PROJECTION.search(op_name)
      and re.search(r'BNTS|BTNH|softmax|dot_product_attention|reduce_max|exp', op_name)):
    return 'attention core', direction
  if (opcode in ('dot', 'convolution') or _GEMM_CALL.search(target)
      or last.startswith('dot_general')):
    return 'matmul', direction
  if in_model:
    return 'norm / modulation / elementwise', direction
  if _NOISE.search(op_name):
    return 'noise / masks / loss', direction
  if op_name:
    return 'optimizer + EMA', direction
  return 'other', direction


def load_trace(trace_dir: str) -> list:
  """The newest Perfetto trace under trace_dir -> its event list."""
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'),
                           recursive=True), key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f'--trace_dir: no *perfetto_trace.json.gz under {trace_dir!r}')
  with gzip.open(files[-1]) as f:
    data = json.load(f)
  return data['traceEvents'] if isinstance(data, dict) else data


def op_events(events: list, module_prefix: str = 'jit_train_step') -> list:
  """Complete events of the step's XLA ops -> [(hlo_op, start_us, duration_us)]."""
  out = []
  for e in events:
    args = e.get('args') or {}
    if e.get('ph') != 'X' or not str(args.get('hlo_module', '')).startswith(module_prefix):
      continue
    name = args.get('hlo_op') or e.get('name', '')
    if name.startswith('end: '):
      continue
    out.append((name, float(e['ts']), float(e.get('dur', 0.0))))
  return out


def _busy_us(events) -> float:
  """Length of the union of the events' [start, start + dur) intervals."""
  total, end = 0.0, float('-inf')
  for _, start, dur in sorted(events, key=lambda x: x[1]):
    if start > end:
      total += dur
      end = start + dur
    elif start + dur > end:
      total += start + dur - end
      end = start + dur
  return total


def breakdown(events: list, instructions: dict, step_wall_us: float, steps: int) -> dict:
  """Per-category op time per step (ms, with fwd / bwd parts), shares, and the host gap."""
  per = collections.defaultdict(lambda: collections.Counter())
  unknown = 0
  for name, _, dur in events:
    info = instructions.get(name)
    if info is None:
      unknown += 1
      category, direction = 'other', ''
    else:
      category, direction = categorize(*info)
    per[category][direction or 'other'] += dur
    per[category]['total'] += dur
  op_total = sum(c['total'] for c in per.values())
  busy = _busy_us(events)
  rows = []
  for category in CATEGORIES:
    c = per.get(category, collections.Counter())
    rows.append(dict(category=category, ms=c['total'] / steps / 1e3,
                     fwd_ms=c['fwd'] / steps / 1e3, bwd_ms=c['bwd'] / steps / 1e3,
                     share=c['total'] / op_total if op_total else 0.0))
  return dict(rows=rows, step_ms=step_wall_us / steps / 1e3,
              busy_ms=busy / steps / 1e3, op_ms=op_total / steps / 1e3,
              host_gap_ms=max(step_wall_us - busy, 0.0) / steps / 1e3,
              events=len(events), unmatched_events=unknown)


def format_table(b: dict) -> str:
  lines = ['| category | ms / step | fwd | bwd | share of op time |', '|---|---|---|---|---|']
  for r in b['rows']:
    lines.append(f"| {r['category']} | {r['ms']:.2f} | {r['fwd_ms']:.2f} | {r['bwd_ms']:.2f} | "
                 f"{100 * r['share']:.1f} % |")
  lines.append(f"| host gap (no op of the step running) | {b['host_gap_ms']:.2f} | | | |")
  lines.append(f"\nstep {b['step_ms']:.2f} ms wall, ops busy {b['busy_ms']:.2f} ms, summed op "
               f"time {b['op_ms']:.2f} ms; {b['events']} op events "
               f"({b['unmatched_events']} not in the compiled HLO, counted as other)")
  return '\n'.join(lines)


def profile(config, steps: int, warmup: int, trace_dir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  _, state, batch, compiled, _ = common.compiled_step(config)
  for _ in range(warmup):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    wall_us = (time.perf_counter() - t0) * 1e6
  return breakdown(op_events(load_trace(trace_dir)), hlo_instructions(compiled.as_text()),
                   wall_us, steps)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  b = profile(f.config, f.steps, f.warmup, f.trace_dir)
  print(f'\nTrain-step profile: {jax.devices()[0].platform}:'
        f'{getattr(jax.devices()[0], "device_kind", "")}, {f.steps} traced steps, '
        f'trace in {f.trace_dir}\n')
  print(format_table(b), flush=True)


if __name__ == '__main__':
  # Flags only when run as a command: importing this module (tests) defines none.
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', 'configs/tiny.py', 'Run config.', lock_config=True)
  flags.DEFINE_integer('steps', 3, 'Traced steps (after warmup).')
  flags.DEFINE_integer('warmup', 2, 'Untraced steps after compilation.')
  flags.DEFINE_string('trace_dir', '/tmp/maskvid_profile', 'Where the trace is written.')
  app.run(main)
