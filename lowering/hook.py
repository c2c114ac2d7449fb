"""Install the lowering when Inductor's config loads, without importing Inductor ourselves.

NOTE: ``import torch._inductor.config`` costs about 1.3 s on the CI machine (it initialises the
whole ``torch._inductor`` package and Dynamo; measured with ``python -X importtime``), against
0.02 s for ``import hipbmm_inductor``. So ``import hipbmm_inductor`` does not import it: if
Inductor is already loaded we install at once, otherwise a one-shot import hook installs right
after ``torch._inductor.config`` finishes executing, which every ``torch.compile`` with Inductor
(and every ``torch._inductor.config.freezing = True``) goes through before any compilation.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys

__all__ = ["install_when_inductor_loads"]

log = logging.getLogger("hipbmm_inductor")

_TARGET = "torch._inductor.config"


# Set when Inductor's config finished loading while .inductor_pass itself was still being imported (its
# own imports load Inductor): .inductor_pass then installs at the end of its module body.
_pending = False


def _install() -> None:
    global _pending
    pass_mod = sys.modules.get(__package__ + ".inductor_pass")
    if pass_mod is not None and not hasattr(pass_mod, "install"):
        _pending = True  # `from hipbmm_inductor.lowering import inductor_pass` came first
        return
    try:
        # Imports Inductor, which `import hipbmm_inductor` (this module's importer) must not do.
        from .inductor_pass import install

        install()
    except Exception:  # never break the user's import of torch._inductor
        log.warning("hipbmm lowering: could not install the Inductor pass", exc_info=True)


def take_pending() -> bool:
    """True once if an install was deferred to the end of .inductor_pass's import."""
    global _pending
    pending, _pending = _pending, False
    return pending


class _AfterInductorConfig(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of ``torch._inductor.config``, once."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)  # one-shot, and keeps the lookup below from finding us
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            _install()

        # The loader is a fresh instance made for this spec (FileFinder builds one per lookup).
        loader.exec_module = exec_then_install
        return spec


def install_when_inductor_loads() -> None:
    if _TARGET in sys.modules:
        _install()
    elif not any(isinstance(f, _AfterInductorConfig) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterInductorConfig())
