"""Benchmarks, each printing one table: `python -m maskvid.bench.<name>` (data, train_step, sampler)."""
