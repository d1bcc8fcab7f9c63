"""The physics shared by the simulator, the theory and the diagnostics: activations (phi, its derivatives,
kinks and closed forms), Gaussian quadrature, pair coordinates, the mean-field map and statistics.

Nothing in core/ reads or writes files, and nothing in it imports simulate/, theory/, diagnose/ or figures/.
"""
