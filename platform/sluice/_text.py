"""Plain-text tables for what the CLI and the pipelines print (no terminal library)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["figure", "text_table"]


def figure(value: float | None, spec: str = ".4f") -> str:
    """A number for a table cell; "-" for a figure that could not be measured."""
    return "-" if value is None else format(value, spec)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, a dashed rule under the header."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
