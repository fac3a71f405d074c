"""MiniLM sentence embeddings: our BERT + our WordPiece (fast and reference) == sentence-transformers
loaded from the same local directory (never downloaded).

Tolerance: every component within 1e-5 of sentence-transformers' vector. Both sides run 6 float32
layers of width 384 in a different order and normalise; measured here the largest component
difference is 2.4e-7 (fast) and 2.1e-7 (reference), so 1e-5 leaves 40x. The cosine >= 0.99999 per
sentence (the README's promise) is checked too, but is the weaker test: for unit vectors
1 - cos = |a - b|**2 / 2, so it only rejects |a - b| > 4.5e-3 (measured 1 - cos: 1.2e-7, one
float32 step below 1). The vectors have unit length to 1e-5 (measured 6e-8).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from myllm101.hub.embed import embed, model_dir
from parity_tests.helpers import assert_close

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "Retrieval-augmented generation combines search with a language model.",
    "Héllo naïve café, CRÈME brûlée!",
    "北京欢迎你",
    "short",
    "?",
    "",
    "Numbers like 3.14159 and 1,000,000 are tokenized digit by digit sometimes.",
    "Emails: someone@example.com; URLs: https://example.org/a?b=c",
    "tabs\tand\nnewlines and   spaces",
    "The quick brown fox jumps over the lazy dog. " * 30,  # longer than 256 tokens: truncated
    "Ελληνικά, Русский язык, العربية",
    "I love this movie!",
    "I hate this movie!",
    "The weather today is sunny and warm.",
    "It is raining cats and dogs.",
    "Transformers use self-attention over all positions.",
    "[SEP] special tokens [CLS] in the text",
    "don't won't it's O'Reilly's",
    "🙂🚀 emoji only",
]


@pytest.fixture(scope="module")
def expected():
    os.environ["HF_HUB_OFFLINE"] = "1"  # local directory only: never download
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir("minilm")), device="cpu")
    return model.encode(SENTENCES, batch_size=8, convert_to_numpy=True, normalize_embeddings=True)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_embeddings_match_sentence_transformers(expected, impl):
    # the reference in batches of 4: the 256-token sentence pads fewer short ones (NumPy is slow)
    # dtype fp32: the default "auto" is bf16 where bf16 is native (tests/test_embed_batching.py)
    ours = embed(SENTENCES, model="minilm", impl=impl, batch_size=8 if impl == "fast" else 4,
                 dtype="fp32")  # fmt: skip
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert_close(ours, expected, rtol=0.0, atol=1e-5, name=f"{impl} embeddings")
    cosine = np.sum(ours * expected, axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(np.argmin(cosine))
    assert cosine.min() >= 0.99999, (impl, SENTENCES[worst][:60], float(cosine[worst]))


def test_embedding_bad_input():
    with pytest.raises(ValueError, match="model: expected one of \\['minilm'\\], got 'nope'"):
        embed(["x"], model="nope")
    with pytest.raises(
        ValueError, match="impl: expected one of \\('fast', 'reference'\\), got 'x'"
    ):
        embed(["x"], impl="x")
    with pytest.raises(ValueError, match="expected a list of strings, got one str"):
        embed("a sentence")
