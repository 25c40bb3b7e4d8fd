"""The block form's loop must reach its next iteration: ``return`` and ``break`` are refused.

In ``for attempt in runner.attempts(): with attempt as uow: ...`` a failed attempt
(say a lost connection during the COMMIT at the end of the block) is rerun by the
loop's next iteration. A ``return`` or ``break`` in the loop body would leave the
loop first: the failure would be lost and the caller would carry on as if the write
had happened. So before the first attempt, the loop's own source is read (once per
loop, then cached) and a ``return`` or ``break`` in its body is refused with
[`BlockFormError`][uow.BlockFormError]. Without source (an interactive session, ``exec``
of a string), nothing can be checked and nothing is refused.
"""

from __future__ import annotations

import ast
import linecache
from typing import TYPE_CHECKING

from uow._errors import BlockFormError

if TYPE_CHECKING:
    from types import FrameType

_verdicts: dict[tuple[object, int], str | None] = {}
_trees: dict[str, tuple[tuple[str, ...], ast.Module | None]] = {}


def check_block_form(frame: FrameType | None) -> None:
    """Refuse the loop running in ``frame`` (the caller's) if its body returns or breaks."""
    if frame is None:
        return
    key = (frame.f_code, frame.f_lineno)
    try:
        verdict = _verdicts[key]
    except KeyError:
        verdict = _verdicts[key] = _judge(frame.f_code.co_filename, frame.f_lineno, frame)
    if verdict is not None:
        raise BlockFormError(verdict)


def _judge(filename: str, line: int, frame: FrameType) -> str | None:
    tree = _tree(filename, frame)
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.AsyncFor) and node.lineno <= line <= node.iter.end_lineno:  # type: ignore[operator]
            exit_node = _first_exit(node.body)
            if exit_node is None:
                return None
            word = "return" if isinstance(exit_node, ast.Return) else "break"
            return (
                f"{filename}:{exit_node.lineno}: `{word}` inside the block form's loop "
                f"(line {node.lineno}) would leave it before a failed attempt is rerun, and "
                "the failure would be lost. Assign what you need inside the `with` block and "
                "use it after the loop, or run a function with `runner.run(fn, ...)`"
            )
    return None


def _first_exit(body: list[ast.stmt]) -> ast.Return | ast.Break | None:
    """Find a ``return`` (anywhere but in nested scopes) or a ``break`` of this loop."""
    pending: list[tuple[ast.AST, bool]] = [(statement, True) for statement in body]
    while pending:
        node, own_loop = pending.pop(0)
        if isinstance(node, ast.Return) or (own_loop and isinstance(node, ast.Break)):
            return node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        inner_loop = isinstance(node, ast.For | ast.AsyncFor | ast.While)
        for child in ast.iter_child_nodes(node):
            in_inner_body = inner_loop and child not in getattr(node, "orelse", [])
            pending.append((child, own_loop and not in_inner_body))
    return None


def _tree(filename: str, frame: FrameType) -> ast.Module | None:
    lines = tuple(linecache.getlines(filename, frame.f_globals))
    cached = _trees.get(filename)
    if cached is not None and cached[0] == lines:
        return cached[1]
    try:
        tree: ast.Module | None = ast.parse("".join(lines), filename) if lines else None
    except (SyntaxError, ValueError):
        tree = None
    _trees[filename] = (lines, tree)
    return tree
