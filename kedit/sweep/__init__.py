"""Sweeps: many bench runs from one file, on a local process pool or on Ray (docs/SWEEPS.md).

* :mod:`kedit.sweep.sweepfile` reads a sweep file (shared settings, per-method defaults, grids,
  listed runs, or a search); :mod:`kedit.sweep.plan` checks every run with kedit's own validators
  and names it (:mod:`kedit.sweep.naming`), before any work;
* :mod:`kedit.sweep.drive` runs a plan into a sweep directory (:mod:`kedit.sweep.layout`) through
  an executor — :mod:`kedit.sweep.local_pool` or :mod:`kedit.sweep.ray_pool` — whose workers run
  :func:`kedit.sweep.worker.execute_task`; :mod:`kedit.sweep.merge` joins a run's shards;
* :mod:`kedit.sweep.status` tells where a sweep stands from its files; :mod:`kedit.sweep.search`
  runs a Ray Tune search.

Importing this package imports neither torch nor Ray; the modules that need them import them when
a sweep is checked or run.
"""
