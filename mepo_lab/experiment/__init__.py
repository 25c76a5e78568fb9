"""GCL experiments: one run (on cached features or on images) and grids of runs, on any dataset.

:mod:`~mepo_lab.experiment.runs` holds one run (:func:`run_on_features`, :func:`run_on_images`, :func:`run_one`) and
the cached features it starts from; :mod:`~mepo_lab.experiment.grids` the grids made of them (:func:`run_grid`,
:func:`compare_backbones`, :func:`sweep`, :func:`feature_runner`, the MePo gains). Everything is importable from
``mepo_lab.experiment``.
"""
from mepo_lab.experiment.grids import (MEPO_VARIANTS, compare_backbones, feature_runner, first_task_hscores,
                                       mepo_gains, run_grid, sweep)
from mepo_lab.experiment.runs import (WorldFeatures, backbone_features, run_many_on_features, run_on_features,
                                      run_on_images, run_one, with_covariance, world_features)

__all__ = ["MEPO_VARIANTS", "WorldFeatures", "backbone_features", "compare_backbones", "feature_runner",
           "first_task_hscores", "mepo_gains", "run_grid", "run_many_on_features", "run_on_features", "run_on_images",
           "run_one", "sweep", "with_covariance", "world_features"]
