"""Errors a user can act on: the CLI prints them as one line, without a traceback.

Damaged files (a truncated Parquet file, a foreign file in a results folder) are reported with
:func:`damaged`: a :class:`DamagedFileWarning` naming the file and the fix, and the rest of the work
goes on; under ``--strict`` (``WSBENCH_STRICT=1``) the same message is an error.
"""
from __future__ import annotations

import os
import warnings


class WsbenchError(Exception):
    """Bad input or state the user can fix; the message says what is wrong and what to do."""


class WsbenchWarning(UserWarning):
    """Something was skipped or worked around; the message says what and how to fix it."""


class DamagedFileWarning(WsbenchWarning):
    """A stored file could not be used and was skipped."""


def unknown_name(kind: str, name: str, known) -> WsbenchError:
    known = sorted(known)
    listed = ", ".join(known) if known else "(none installed)"
    return WsbenchError(f"unknown {kind} {name!r}; known {kind}s: {listed}")


def strict() -> bool:
    """Whether ``--strict`` / ``WSBENCH_STRICT=1`` is on."""
    return os.environ.get("WSBENCH_STRICT", "").strip().lower() in ("1", "true", "yes")


def damaged(message: str) -> None:
    """Report a damaged file that is skipped: a warning, or under strict mode an error."""
    if strict():
        raise WsbenchError(message + " (strict mode: fix or remove the file, or drop --strict to skip it)")
    warnings.warn(message, DamagedFileWarning, stacklevel=2)
