"""kernel-eft: kernels of finite-width pre-activation ResNets, Monte Carlo against EFT.

    import kernel_eft as ke
    mc = ke.simulate(activation="relu", width=64, depth=8, time=1.0, kin=[[1, 0.6], [0.6, 1]], samples=2000)
    th = ke.theory(activation="relu", kin=[[1, 0.6], [0.6, 1]], time=1.0, closure="exact", depth=8)
    d = ke.diagnose([mc], [th])
    ke.figures([d], "figures/")

The functions of the API (kernel_eft.api) and the registries load on first use, so that `import kernel_eft`
and the CLI's --help stay fast and the CLI can pin BLAS threads before numpy loads.  The rooms of the
package, kernel_eft.simulate, .theory, .diagnose and .figures, share their names with the API functions:
they are loaded here first (their __init__ files import nothing), so that the names below stay the functions;
import their modules by full name (from kernel_eft.simulate.params import SimulationParams).  Layout:
docs/architecture.md.
"""

import kernel_eft.diagnose
import kernel_eft.figures
import kernel_eft.simulate
import kernel_eft.theory  # noqa: F401 (rooms first; the functions below then take their names)
from kernel_eft.version import __version__, git_commit


def simulate(**kwargs):
    """Monte Carlo of the finite-width ResNet: kernel_eft.api.simulate."""
    from kernel_eft.api import simulate as run

    return run(**kwargs)


def theory(**kwargs):
    """A closure's theory of K0, V4, K1 and the K1 source: kernel_eft.api.theory."""
    from kernel_eft.api import theory as run

    return run(**kwargs)


def diagnose(*args, **kwargs):
    """Diagnostics of one grid point: kernel_eft.api.diagnose."""
    from kernel_eft.api import diagnose as run

    return run(*args, **kwargs)


def figures(*args, **kwargs):
    """Every figure and the summary table of a study (returns the paths written): kernel_eft.api.figures."""
    from kernel_eft.api import figures as run

    return run(*args, **kwargs)


_LAZY = {
    "merge": "kernel_eft.api", "summary": "kernel_eft.api",
    "Activation": "kernel_eft.core.activations", "register_activation": "kernel_eft.core.activations",
    "activation_names": "kernel_eft.core.activations", "custom_activation": "kernel_eft.core.activations",
    "get_activation": "kernel_eft.core.activations",
    "Closure": "kernel_eft.theory.registry", "register_closure": "kernel_eft.theory.registry",
    "Option": "kernel_eft.theory.closure",
    "closure_names": "kernel_eft.theory.registry", "get_closure": "kernel_eft.theory.registry",
    "Figure": "kernel_eft.figures.registry", "register_figure": "kernel_eft.figures.registry",
}

__all__ = ["__version__", "diagnose", "figures", "git_commit", "simulate", "theory", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'kernel_eft' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
