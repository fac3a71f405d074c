"""The Gradio app (``myllm101 ui``): chat, tokenizer playground, attention heatmap, RAG, compare.

- ``chat.py``: load a model, build its prompt, stream its reply (fast/generate.py ``stream``);
- ``tokens.py``: tokens with colours and ids, reference vs fast encode time;
- ``attention.py``: one layer's attention weights, recomputed from its q and k;
- ``rag.py``: the RAG tab's lazy link to myllm101/rag/;
- ``app.py``: the gr.Blocks wiring them; ``cli.py``: the command.

Gradio is imported only when the app is built, so the helpers work without it.
"""
