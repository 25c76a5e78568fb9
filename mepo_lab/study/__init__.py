"""``mepo-lab study``: a controlled, pre-registered study of what makes MePo work on the embedded default
(refinement controls × learners × alignment × distribution shift × seeds, with diagnostics)."""
