"""Benchmarks of the active-learning loop (issue 4).

* :mod:`bench.label_efficiency` -- labels needed for a given accuracy, every query
  strategy against random sampling, on the shipped CFPB sample (real data).
* :mod:`bench.throughput` -- featurize / query / ranked-batch speed and peak memory on
  resampled pools of 100k and 1M complaints, against the seed recipe and plain modAL.

Run everything with ``python -m bench`` (``make bench``); see ``bench/README.md``.
Not part of ``make test``; ``tests/test_bench_smoke.py`` runs both on a tiny size.
"""
