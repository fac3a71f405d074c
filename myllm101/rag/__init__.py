"""Retrieval-augmented generation: documents -> chunks -> BM25 and dense indexes -> retrieval.

    docs = load_documents("notes/")                                   # rag/documents.py
    chunks = chunk_documents(docs, tokenizer, max_tokens=200, overlap=40)  # rag/chunk.py
    index = bm25_index([terms(c.text) for c in chunks])               # fast/bm25.py, rag/terms.py
    rows, scores = index.top_k(terms("who killed the king?"), k=5)
    rows, scores = cosine_top_k(query_vectors, chunk_vectors, k=5)    # fast/dense.py
    fused = reciprocal_rank_fusion([bm25_rows, dense_rows])           # rag/fusion.py

The retrieval math has a NumPy reference and a PyTorch twin (``reference/bm25.py`` /
``fast/bm25.py``, ``reference/dense.py`` / ``fast/dense.py``), proven equal in
``parity_tests/test_bm25.py`` and ``parity_tests/test_dense.py`` (BM25 also against ``rank_bm25``).
The embedding model, the store on disk, the retriever, prompts and answers live in
``embedder.py``, ``store.py``, ``retrieve.py``, ``prompt.py`` and ``answer.py``.
"""
