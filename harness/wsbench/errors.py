"""Errors a user can act on: the CLI prints them as one line, without a traceback."""


class WsbenchError(Exception):
    """Bad input or state the user can fix; the message says what is wrong and what to do."""


def unknown_name(kind: str, name: str, known) -> WsbenchError:
    known = sorted(known)
    listed = ", ".join(known) if known else "(none installed)"
    return WsbenchError(f"unknown {kind} {name!r}; known {kind}s: {listed}")
