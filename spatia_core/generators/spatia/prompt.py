"""Prompt text preparation, as the official Spatia release does it before tokenising.

The release (Wan's prompter, ``clean="whitespace"``) repairs the text with ftfy, unescapes HTML
entities twice (so ``&amp;amp;`` becomes ``&``), then collapses every run of Unicode whitespace to
one space and strips both ends. :func:`clean_prompt` does the same; it is checked against the
release's own function in ``test/core/test_spatia_release_dit.py``.
"""

from __future__ import annotations

import html
import re

__all__ = ["clean_prompt"]

# Unicode White_Space (what the release's ``regex`` ``\s`` matches). Python's ``re`` ``\s`` also
# matches U+001C..U+001F, which are not White_Space; an explicit class keeps the two identical.
_WHITESPACE = re.compile(
    "[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)


def clean_prompt(text: str) -> str:
    """The release's prompt cleaning: ``ftfy.fix_text`` (mojibake, control characters, HTML
    entities outside markup), ``html.unescape`` twice, whitespace runs -> one space, stripped.

    Example: ``"  a caf\\u00c3\\u00a9 &amp;amp; a  room\\n"`` -> ``"a café & a room"``.
    """
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
