"""Pre-tokenization regexes of the three OpenAI byte-level BPE vocabularies (exact strings).

Byte-level BPE never merges across the pieces these patterns cut a text into, so the pattern is as
much a part of a vocabulary as its merges: encoding with the right ranks but the wrong pattern gives
different ids. The strings are the ones tiktoken uses (they are facts about the vocabularies);
they need the ``regex`` package (``\\p{L}`` classes, possessive ``++`` quantifiers).

Shared by ``reference/bpe.py`` and ``fast/bpe.py``, with ``fix_surrogates``, the one change a text
gets before the pattern runs; like ``myllm101/checks/`` it imports nothing.
"""

# GPT-2 (r50k_base). The original GPT-2 release wrote it as
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# tiktoken's equivalent form below uses possessive quantifiers, which backtrack less.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# GPT-4 (cl100k_base): case-insensitive contractions, digits in groups of at most 3, a letter run may
# take one leading non-letter (usually a space), punctuation keeps its trailing newlines.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# GPT-4o (o200k_base): words split at case changes (CamelCase -> Camel, Case), contractions stick
# to the word before them, punctuation keeps trailing newlines and slashes.
O200K_SPLIT_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# name -> pattern, for the three vocabularies shipped by myllm101.tokenizer.pretrained
SPLIT_PATTERNS = {
    "gpt2": GPT2_SPLIT_PATTERN,
    "cl100k_base": GPT4_SPLIT_PATTERN,
    "o200k_base": O200K_SPLIT_PATTERN,
}


def fix_surrogates(text: str) -> str:
    """Lone UTF-16 surrogates cannot be UTF-8 encoded: they become U+FFFD (as in tiktoken).

    "a\\ud800b" -> "a\\ufffdb";  a valid surrogate pair "\\ud83d\\ude00" -> "\\U0001f600"
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
