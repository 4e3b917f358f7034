#!/usr/bin/env bash
# Apple's Embedding Atlas 0.22 in a virtualenv of its own, for bench/bench_app.py's side-by-side case.
#
# 0.22 is Atlas's last release with a WebGL2 path (0.26 draws only with WebGPU), so it is the one that can be
# compared with embedlens in headless Chromium with software GL. It lives in its own virtualenv (default
# .venv-atlas, or $ATLAS_VENV) because its pins (pandas>=3, pyarrow>=24, duckdb>=1.5 ...) are not ours:
# .venv is never touched.
#
# Only what its CLI needs to serve a table whose 2-D coordinates are given (--x/--y) is installed: the wheel
# with --no-deps, then its server's imports. sentence-transformers (torch), litellm, accelerate and umap-learn
# are declared by the wheel but used only to compute embeddings or to call a language model, which the
# benchmark never asks for.
#
# Usage: bash bench/atlas_env.sh            (idempotent; prints the path of the embedding-atlas command)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ATLAS_VENV:-$root/.venv-atlas}"
wheel_version="0.22.0"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  # keep git's status clean without editing the project's .gitignore
  echo '*' > "$venv/.gitignore"
fi
if ! "$venv/bin/python" -c "import embedding_atlas.cli, embedding_atlas.version as v, sys; sys.exit(v.__version__ != '$wheel_version')" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --no-deps "embedding-atlas==$wheel_version"
  # its CLI and server's own imports (embedding_atlas/cli.py, server.py, utils.py, data_source.py)
  "$venv/bin/pip" install --quiet click inquirer numpy pandas pyarrow duckdb fastapi uvicorn narwhals \
    platformdirs tqdm websockets uvloop cryptography
fi
"$venv/bin/python" -c "import embedding_atlas.cli" >/dev/null
echo "$venv/bin/embedding-atlas"
