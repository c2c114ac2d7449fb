"""Whether a cached or imported config is one its backend can launch.

A row read from the cache or from ``cache import`` is checked against its backend's config space
before it is used: a backend may define ``config_error(config, n, k, extra) -> Optional[str]``
(``None``: usable; otherwise the reason). A config the backend rejects is never handed to its
launcher: the tuner skips it (one warning, the backend's heuristic runs) and ``cache import``
refuses it.
"""

from __future__ import annotations

from typing import Optional

from hipbmm_inductor.ops import registry

from .rows import Row

__all__ = ["config_problem"]


def config_problem(row: Row) -> tuple[Optional[str], bool]:
    """``(reason the row's config is unusable or None, whether the backend could check it)``."""
    backend = registry.get_backend(row.backend)
    check = getattr(backend, "config_error", None)
    if check is None:  # an unknown backend, or one without a config space (reference)
        return None, False
    try:
        return check(row.config_dict(), row.n, row.k, row.extra), True
    except Exception as e:  # a checker's bug must not take the tuner down: the row is not used
        return f"the {row.backend!r} backend's config check raised {type(e).__name__}: {e}", True
