"""Real weights: Hugging Face / GGUF importers and the shipped model names (app layer).

convert.py   HF GPT-2 / LLaMA / BERT checkpoints -> our config + state_dict
gguf_loader.py  a llama.cpp GGUF file (SmolLM2) -> our LLaMA config + state_dict + BPE tokenizer
embed.py     sentence embeddings with MiniLM (our BERT + our WordPiece)
smollm2.py   SmolLM2-135M-Instruct: chat template + greedy generation
cli.py       ``myllm101 embed`` and ``myllm101 generate --model smollm2``
"""
