"""One process of the sharded latent-cache check (driven by tests/test_cache_sharded.py).

  python tests/cache_worker.py --config=CONFIG.json --workdir=DIR --latents=DIR
      --coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I

Joins `jax.distributed` with the explicit flags (`maskvid.distributed.initialize`) and builds the
latent cache of DIR's data and VAE into --latents (`maskvid.vae.cache.build_latent_cache`).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--config', required=True)
  p.add_argument('--workdir', required=True)
  p.add_argument('--latents', required=True)
  p.add_argument('--coordinator', required=True)
  p.add_argument('--num_processes', type=int, default=2)
  p.add_argument('--process_id', type=int, required=True)
  args = p.parse_args()
  from maskvid import distributed  # pylint: disable=g-import-not-at-top
  from maskvid import workdir  # pylint: disable=g-import-not-at-top
  from maskvid.vae import cache  # pylint: disable=g-import-not-at-top
  config = workdir.read_config(args.config)
  config.distributed.coordinator_address = args.coordinator
  config.distributed.num_processes = args.num_processes
  config.distributed.process_id = args.process_id
  assert distributed.initialize(config) == 'explicit'
  cache.build_latent_cache(config, os.path.join(args.workdir, 'vae'),
                           os.path.join(args.workdir, 'data'), args.latents)
  print(f'process {args.process_id}: done', flush=True)


if __name__ == '__main__':
  main()
