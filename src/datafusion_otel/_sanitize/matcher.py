"""Find many literal renderings in a text in one pass, in time linear in the text's length.

A rendering is matched on token boundaries only: a rendering that starts (ends) with a word
character is not preceded (followed) by one. So a match always starts and ends on the
boundaries of the text's *chunks* (a run of word characters, or one other character), and
matching is a walk of a trie of chunk sequences from each chunk of the text: a dictionary
lookup per chunk, whatever the number of renderings (an alternation of thousands of
renderings, or a substring test per rendering, costs their number times the text's length).
At each position the longest rendering wins, as in an alternation ordered longest first.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["RENDERING", "WORD", "Matcher", "chunks"]

RENDERING = 1
"""Kind of a full rendering (matched in every text)."""
WORD = 2
"""Kind of a word of a string value (matched in error messages only)."""

_CHUNK = re.compile(r"\w+|\W")
_END = ""  # no chunk is empty: the key of a node's kinds


def chunks(text: str) -> list[str]:
    """Split ``text`` into runs of word characters and single other characters."""
    return _CHUNK.findall(text)


class Matcher:
    """A trie of renderings, each stored as its sequence of chunks.

    Args:
        items: ``(text, kind)`` pairs, kind `RENDERING` or `WORD`.
    """

    def __init__(self, items: Iterable[tuple[str, int]]) -> None:
        self._root: dict[str, Any] = {}
        for text, kind in items:
            node = self._root
            for chunk in chunks(text):
                node = node.setdefault(chunk, {})
            node[_END] = node.get(_END, 0) | kind

    def __bool__(self) -> bool:
        return bool(self._root)

    def spans(self, text: str, kinds: int) -> Iterator[tuple[int, int]]:
        """Yield the ``(start, end)`` of each match in ``text``, left to right, not overlapping.

        Args:
            text: Any text.
            kinds: Bit mask of the kinds to match (`RENDERING`, `WORD`).
        """
        if not self._root:
            return
        tokens = chunks(text)
        offsets = list(itertools.accumulate(map(len, tokens), initial=0))
        root = self._root
        count = len(tokens)
        index = 0
        while index < count:
            node = root.get(tokens[index])
            if node is None:
                index += 1
                continue
            best = -1
            cursor = index
            while True:
                if node.get(_END, 0) & kinds:
                    best = cursor
                cursor += 1
                if cursor >= count:
                    break
                node = node.get(tokens[cursor])
                if node is None:
                    break
            if best < 0:
                index += 1
                continue
            yield offsets[index], offsets[best + 1]
            index = best + 1

    def sub(self, text: str, kinds: int, replace: Callable[[str], str]) -> str:
        """Return ``text`` with each match replaced by ``replace(match)``."""
        out: list[str] = []
        position = 0
        for start, end in self.spans(text, kinds):
            out.append(text[position:start])
            out.append(replace(text[start:end]))
            position = end
        if not out:
            return text
        out.append(text[position:])
        return "".join(out)
