# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 13 · Retrieval-augmented generation: the retrieval half
#
# A language model knows what was in its training data. To answer from *your* documents, RAG
# retrieves the passages most relevant to the question and puts them into the prompt. The
# retrieval half, which this notebook builds, has three steps:
#
# 1. **Chunk** each document into pieces of at most N tokens, cut at paragraph and sentence seams,
#    each remembering its byte offsets in the file (so an answer can cite exactly where it came
#    from) ([rag/chunk.py](../myllm101/rag/chunk.py)).
# 2. **Sparse retrieval, BM25**: score each chunk by the query words it contains, weighted by how
#    rare they are (idf) and saturated in how often they occur (k1), normalised by length (b).
# 3. **Dense retrieval**: embed chunks and queries as unit vectors (MiniLM,
#    [hub/embed.py](../myllm101/hub/embed.py)) and take the keys with the largest cosine.
#
# Both retrievers exist twice: [reference/bm25.py](../myllm101/reference/bm25.py) and
# [reference/dense.py](../myllm101/reference/dense.py) in NumPy, [fast/bm25.py](../myllm101/fast/bm25.py)
# and [fast/dense.py](../myllm101/fast/dense.py) in PyTorch. The whole pipeline (index on disk,
# fusion, the prompt, SmolLM2 answering) is `myllm101 rag` and `pipeline("rag", ...)`.

# %%
import math

import numpy as np
import torch

from myllm101.fast import bm25 as F_bm25
from myllm101.fast import dense as F_dense
from myllm101.hub.embed import embed
from myllm101.rag.chunk import chunk_documents
from myllm101.rag.documents import Document
from myllm101.rag.fusion import reciprocal_rank_fusion
from myllm101.rag.terms import terms
from myllm101.reference import bm25 as R_bm25
from myllm101.reference import dense as R_dense
from myllm101.tokenizer import load_pretrained

torch.set_num_threads(1)  # small tensors: one thread is faster than handing work to a pool

# %% [markdown]
# ## A tiny knowledge base
#
# Three short notes about this course (one with non-ASCII text, so byte offsets and character
# offsets differ).

# %%
docs = [
    Document(
        "notes/lora.md",
        """# LoRA
LoRA freezes the pretrained weight W and trains two thin matrices A and B. B starts at zero, so a \
fresh adapter changes nothing.

After training, the update can be merged into the weight: W' = W + (alpha / r) B A. Inference then \
costs one matmul again.""",
    ),
    Document(
        "notes/rope.md",
        """# Positions
GPT-2 learns one position vector per index. LLaMA rotates queries and keys instead (RoPE), so \
attention scores depend on the distance between tokens.

LLaMA 3 raised the RoPE base theta to 500,000 for long contexts — the slowest rotation barely \
turns over thousands of tokens.""",
    ),
    Document(
        "notes/quant.md",
        """# Quantization
Int8 stores every weight in one byte with one scale per output row: the weight moves by at most \
half a step. Pruning instead sets weights to zero; Wanda scores each weight by |W| times the norm \
of its input feature.

Café-sized models decode faster: every generated token reads every weight once.""",
    ),
]
tok = load_pretrained("gpt2")  # only counts tokens for the chunker
chunks = chunk_documents(docs, tok, max_tokens=40, overlap=0)
by_path = {d.path: d.text.encode("utf-8") for d in docs}
print(f"{len(docs)} documents -> {len(chunks)} chunks of <= 40 GPT-2 tokens")
for c in chunks:
    exact = by_path[c.doc][c.start : c.end].decode("utf-8") == c.text
    print(f"{c.id:16s} bytes [{c.start:4d}, {c.end:4d})  {len(tok.encode(c.text)):2d} tokens  "
          f"file bytes == text: {exact}  {c.text[:40]!r}")  # fmt: skip

# %% [markdown]
# ## BM25, three ways
#
# $$\text{score}(d) = \sum_{t \in q} \text{idf}(t)\,
# \frac{tf(t,d)\,(k_1 + 1)}{tf(t,d) + k_1\,(1 - b + b\,|d| / \text{avgdl})},\quad
# \text{idf}(t) = \ln\frac{N - df(t) + 0.5}{df(t) + 0.5}$$
#
# (a term in more than half of the chunks would get a negative idf; like `rank_bm25` it is
# replaced by `epsilon` times the mean idf). First the formula written out in plain Python for one
# query, then the reference and the fast index, which store the term-chunk matrix as CSR arrays
# and touch only the query's postings.

# %%
docs_terms = [terms(c.text) for c in chunks]
query = "how does rope encode the distance between tokens"
q_terms = terms(query)
k1, b, eps = 1.5, 0.75, 0.25


def bm25_by_hand(docs_terms: list[list[str]], q_terms: list[str]) -> list[float]:
    N = len(docs_terms)
    avgdl = sum(len(d) for d in docs_terms) / N
    vocab = sorted({t for d in docs_terms for t in d})
    df = {t: sum(t in d for d in docs_terms) for t in vocab}
    idf = {t: math.log(N - df[t] + 0.5) - math.log(df[t] + 0.5) for t in vocab}
    floor = eps * sum(idf.values()) / len(idf)  # rank_bm25's floor for negative idfs
    idf = {t: (v if v >= 0 else floor) for t, v in idf.items()}
    out = []
    for d in docs_terms:
        s = 0.0
        for t in q_terms:
            tf = d.count(t)
            if tf:
                s += idf[t] * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return out


by_hand = np.array(bm25_by_hand(docs_terms, q_terms))
ref_index = R_bm25.bm25_index(docs_terms, k1, b, eps)
fast_index = F_bm25.bm25_index(docs_terms, k1, b, eps)
bm25_ref, bm25_fast = ref_index.scores(q_terms), fast_index.scores(q_terms).numpy()
rows_ref, top_ref = ref_index.top_k(q_terms, 3)
rows_fast, top_fast = fast_index.top_k(q_terms, 3)
print("query terms:", q_terms)
for i, c in enumerate(chunks):
    print(
        f"{c.id:16s} by hand {by_hand[i]:.6f}  reference {bm25_ref[i]:.6f}  fast {bm25_fast[i]:.6f}"
    )
print("top 3 (reference):", [chunks[r].id for r in rows_ref])
print("top 3 (fast):     ", [chunks[r].id for r in rows_fast.tolist()])

# %% [markdown]
# ## Dense retrieval: cosine top-k
#
# MiniLM (all-MiniLM-L6-v2, loaded by our own BERT from an installed package) turns each chunk and
# each question into a 384-wide unit vector. With unit vectors, cosine similarity is a dot
# product; top-k keeps the k largest, ties to the lower row. Both implementations score keys
# block by block (here blocks of 4, to exercise the merge of per-block winners) and must return
# the same rows. The questions are paraphrases: BM25 needs the same words, the embedding
# compares meaning (a 22M-parameter one: expect sensible, not perfect, rankings).

# %%
questions = [
    "how is a trained adapter folded back into the model?",
    "why do smaller models generate text faster?",
    "how does LLaMA tell the model where each token is?",
]
keys = embed([c.text for c in chunks], "minilm", dtype="fp32")  # (n_chunks, 384) float32
queries = embed(questions, "minilm", dtype="fp32")  # (3, 384)
d_rows_ref, d_scores_ref = R_dense.cosine_top_k(queries, keys, k=3, block_size=4)
d_rows_fast, d_scores_fast = F_dense.cosine_top_k(torch.from_numpy(queries),
                                                  torch.from_numpy(keys), k=3, block_size=4)  # fmt: skip
for i, q in enumerate(questions):
    best = [f"{chunks[r].id} ({s:.3f})" for r, s in zip(d_rows_ref[i], d_scores_ref[i])]
    print(f"{q!r}\n    {best}")
# how close the nearest two scores of any query come: a gap far above float32 rounding means the
# ranking cannot depend on the implementation
all_scores = np.sort(queries.astype(np.float64) @ keys.astype(np.float64).T, axis=1)
min_gap = np.diff(all_scores, axis=1).min()
print(f"smallest gap between two scores of one query: {min_gap:.1e}")

# %% [markdown]
# ## Fusing the two rankings
#
# Reciprocal rank fusion adds `1 / (60 + rank)` over the rankings a chunk appears in: a chunk that
# both retrievers rank high wins, and neither retriever's score scale matters.

# %%
for i, q in enumerate(questions):
    sparse = [int(r) for r in ref_index.top_k(terms(q), 3)[0]]
    dense = [int(r) for r in d_rows_ref[i]]
    fused = reciprocal_rank_fusion([sparse, dense])[:2]
    print(f"{q!r}\n    BM25 {[chunks[r].id for r in sparse]}\n    dense {[chunks[r].id for r in dense]}"
          f"\n    fused {[(chunks[r].id, round(s, 4)) for r, s in fused]}")  # fmt: skip

# %% [markdown]
# ## The two agree
#
# - Chunk offsets: the file's bytes `[start, end)` decode to exactly the chunk's text.
# - BM25: float64 on all three sides, the same terms summed in different orders: rtol 1e-12; the
#   top-k rows are identical.
# - Dense: the same float32 dot products of 384 terms (rounding ~sqrt(384) * 6e-8 ~ 1e-6 of the
#   unit scores' size): atol 1e-5; the rows are identical, which the smallest gap between two
#   scores (printed above, asserted > 1e-5) guarantees is no accident of rounding.

# %%
for c in chunks:
    assert by_path[c.doc][c.start : c.end].decode("utf-8") == c.text, c.id
np.testing.assert_allclose(bm25_ref, by_hand, rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(bm25_fast, bm25_ref, rtol=1e-12, atol=1e-12)
assert rows_ref.tolist() == rows_fast.tolist()
np.testing.assert_allclose(d_scores_fast.numpy(), d_scores_ref, atol=1e-5)
assert min_gap > 1e-5 and d_rows_ref.tolist() == d_rows_fast.tolist()
print(
    f"reference == fast: BM25 over {len(chunks)} chunks, cosine top-3 for {len(questions)} queries"
)
