#!/usr/bin/env bash
# Create .venv and install barkit with the pinned, tested dependency set in constraints.txt (torch first: its
# CPU wheel is on local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -c constraints.txt torch
python -m pip install -q -c constraints.txt -e '.[test,lint]'
