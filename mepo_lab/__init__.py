"""mepo_lab: a Jupyter-first lab for rehearsal-free general continual learning with pretrained ViTs.

Layers, bottom to top (each imports only from the ones below; docs/architecture.md): ``config``,
``paths``, ``device``, ``loading`` → ``data`` → ``backbones`` → ``protocols`` (Si-Blurry streams, the
online runner, metrics) → ``learners`` → ``mepo`` (and the other seed methods) → ``isa`` → ``registry``
(backbones by name) → ``experiment``, ``viz`` → ``widgets`` → ``quickstart`` → ``bench`` → ``cli``.
``import mepo_lab`` is cheap; import the submodule you need.
"""
__version__ = "0.1.0"
