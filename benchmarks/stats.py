"""Medians, spreads and the Markdown table."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (the values themselves when there are fewer than 2)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def ratio_summary(ratios: Sequence[float]) -> tuple[str, str, str]:
    """Median, min-max and IQR of paired ratios, formatted."""
    q1, q3 = quartiles(ratios)
    return (
        f"{median(ratios):.3f}",
        f"{min(ratios):.3f}-{max(ratios):.3f}",
        f"{q1:.3f}-{q3:.3f}",
    )


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1
) -> str:
    """A Markdown table: the first ``text_columns`` columns left-aligned, numbers right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    right = [index >= text_columns for index in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            str(cell).rjust(width) if align else str(cell).ljust(width)
            for cell, width, align in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + ":" if align else "-" * (width + 2)
            for width, align in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
