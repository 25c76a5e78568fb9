"""Stable import path of MePo's meta covariance and output alignment (the code lives in :mod:`mepo_lab.mepo`).

``from mepo_lab.covariance import meta_covariance, whiten_color, align_features`` keeps working:
:mod:`mepo_lab.mepo.covariance` (``Σ_pre``: computed, validated, saved, loaded),
:mod:`mepo_lab.mepo.whitening` (the whitening–colouring formula, official and corrected) and
:mod:`mepo_lab.mepo.alignment` (the transforms the GCL learners apply).
"""
from mepo_lab.mepo.alignment import CorrectedAlignment, OfficialAlignment
from mepo_lab.mepo.covariance import (
                                      RankDeficientWarning,
                                      load_covariance,
                                      meta_covariance,
                                      save_covariance,
                                      validate_covariance,
)
from mepo_lab.mepo.whitening import MODES, align_features, whiten_color

__all__ = ["MODES", "CorrectedAlignment", "OfficialAlignment", "RankDeficientWarning", "align_features",
           "load_covariance", "meta_covariance", "save_covariance", "validate_covariance", "whiten_color"]
