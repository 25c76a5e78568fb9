"""mepo_lab: a Jupyter-first lab for rehearsal-free general continual learning with pretrained ViTs.

Layers (top to bottom): presets (``config``) → data (``data``) → Si-Blurry streams (``streams``) →
backbones → features → learners → GCL runner (``gcl``) → metrics / results / viz / widgets → CLI.
Imports are lazy: ``import mepo_lab`` is cheap; import the submodule you need.
"""
__version__ = "0.1.0"
