"""Monte Carlo of finite-width pre-activation ResNets at initialisation: the referee of every theory.

params (SimulationParams), samplers (block and weights, one seed batch at a time), estimates (jackknife
summaries), parallel (MPI distribution of batches), dataset (the Monte Carlo file), run (a whole run on a
communicator, and merging).  Nothing here imports kernel_eft.theory: the references at infinite width
(the discrete K0, F) come from kernel_eft.core.
"""
