"""kernel-eft: kernels of finite-width pre-activation ResNets, Monte Carlo against EFT.

    import kernel_eft as ke
    mc = ke.simulate(activation="relu", width=64, depth=8, time=1.0, kin=[[1, 0.6], [0.6, 1]], samples=2000)
    th = ke.theory(activation="relu", kin=[[1, 0.6], [0.6, 1]], time=1.0, closure="exact", depth=8)

The API (kernel_eft.api) and the registries are imported on first use, so that `import kernel_eft` and the
CLI's --help stay fast and the CLI can pin BLAS threads before numpy loads.  Layout: docs/architecture.md.
"""

from kernel_eft.version import __version__, git_commit

_LAZY = {
    "simulate": "kernel_eft.api", "theory": "kernel_eft.api", "diagnose": "kernel_eft.api",
    "figures": "kernel_eft.api", "merge": "kernel_eft.api", "summary": "kernel_eft.api",
    "Activation": "kernel_eft.core.activations", "register_activation": "kernel_eft.core.activations",
    "activation_names": "kernel_eft.core.activations", "custom_activation": "kernel_eft.core.activations",
    "get_activation": "kernel_eft.core.activations",
    "Closure": "kernel_eft.theory", "register_closure": "kernel_eft.theory", "closure_names": "kernel_eft.theory",
    "get_closure": "kernel_eft.theory",
    "Figure": "kernel_eft.figures", "register_figure": "kernel_eft.figures",
}

__all__ = ["__version__", "git_commit", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'kernel_eft' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
