"""MePo — Meta Post-Refinement (Sun et al., arXiv 2602.07940): pseudo task sequences cut from the
pretraining data, a bi-level Reptile refinement of the backbone, and the meta covariance used for
output alignment downstream (``mepo_lab.covariance``)."""
