"""The BM25 analyzer: text -> lowercase word terms, the same function for documents and queries.

    terms("The King's 2 sons, KING_LEAR!")  ->  ['the', 'king', 's', '2', 'sons', 'king_lear']

A term is a maximal run of Unicode word characters (letters, digits, underscore: ``\\w``), after
``str.lower``. No stemming and no stop words: BM25's idf already gives words found in most chunks
a weight near zero, and exact terms keep names and code identifiers searchable.
"""

from __future__ import annotations

import re

from myllm101.checks import expect_str

_WORD = re.compile(r"\w+")


def terms(text: str) -> list[str]:
    """Lowercase word tokens of ``text`` (see the module docstring); "" and "?!" give []."""
    expect_str("text", text)
    return _WORD.findall(text.lower())
