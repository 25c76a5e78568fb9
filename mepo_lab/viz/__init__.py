"""Plots: streams, runs, the synthetic world. Functions return figures; they never call plt.show()."""
