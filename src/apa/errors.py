"""The one exception type the CLI turns into a one-line message, and the one way to list problems."""

from __future__ import annotations

from typing import Sequence

# A long list of problems is cut here: the first ones show what is wrong, the count how much.
PROBLEMS_SHOWN = 20


class ApaError(Exception):
    """A problem with the user's input or environment, stated with what to do about it.

    The message must name the offending input (file, line, field) and the fix; the CLI prints
    it as ``error: <message>`` and exits with status 2.
    """


def problem_list(problems: Sequence[str], shown: int = PROBLEMS_SHOWN) -> str:
    """Problems one per indented line, the first ``shown`` of them, then "... and N more"."""
    lines = [f"  {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)
