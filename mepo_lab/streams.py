"""Stable import path of the Si-Blurry stream builder (the code lives in :mod:`mepo_lab.protocols.streams`).

``from mepo_lab.streams import si_blurry`` keeps working for notebooks and outside checks written against
the first layout; new code imports from :mod:`mepo_lab.protocols`.
"""
from mepo_lab.protocols.streams import Stream, si_blurry

__all__ = ["Stream", "si_blurry"]
