"""Client-supplied text, made safe to put in a log line. Pure.

A string a client sends (an xDS ``node.id``, a certificate's identity, a peer address) may hold a
newline or a terminal escape: logged raw, it forges log lines or rewrites the operator's terminal.
``log_safe`` escapes what is not printable, Python ``repr``-style, and cuts long text short.
"""

from __future__ import annotations

LIMIT = 256


def log_safe(text: object, limit: int = LIMIT) -> str:
    """``text`` with control and other non-printable characters (and backslashes) escaped
    (``\\n``, ``\\x1b``, ``\\u2028``), at most ``limit`` characters of it, then ``...``."""
    raw = str(text)
    cut = raw[:limit]
    shown = "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii") for c in cut)
    return shown + ("..." if len(raw) > limit else "")
