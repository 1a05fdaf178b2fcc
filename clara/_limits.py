"""mlx-lm and the process's open-files limit.

`mlx_lm.utils` sets the limit to (2048, 4096) when it is imported. Where the hard limit is
under 4096 (1024 under systemd's `LimitNOFILE=1024` or `docker --ulimit nofile=1024`) that
is a ValueError, and every clara command stopped with a traceback; where it is higher, the
hard limit was lowered for good (an unprivileged process cannot raise it again), below what
the servers raise their limit to for client connections. That one call is taken as what it
means, "at least 2048 open files where allowed", and the hard limit is left as it is.
"""

from __future__ import annotations

import sys

#: The limits `mlx_lm.utils` sets at import
MLX_LM_LIMITS = (2048, 4096)


def enable() -> None:
    """Before anything imports mlx_lm: its call keeps the hard limit as it is."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    if getattr(resource.setrlimit, "clara_keeps_hard_limit", False):
        return
    setrlimit = resource.setrlimit

    def keeping_hard_limit(which: int, limits: tuple[int, int]) -> None:
        caller = sys._getframe(1).f_globals.get("__name__")
        if (
            which != resource.RLIMIT_NOFILE
            or tuple(limits) != MLX_LM_LIMITS
            or caller != "mlx_lm.utils"
        ):
            return setrlimit(which, limits)
        soft, hard = resource.getrlimit(which)
        want = MLX_LM_LIMITS[0] if hard == resource.RLIM_INFINITY else min(MLX_LM_LIMITS[0], hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            setrlimit(which, (want, hard))
        return None

    keeping_hard_limit.clara_keeps_hard_limit = True  # type: ignore[attr-defined]
    resource.setrlimit = keeping_hard_limit
