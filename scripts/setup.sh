#!/usr/bin/env bash
# Install everything argen needs on a fresh machine (idempotent): Python packages, offline datasets.
# Usage: scripts/setup.sh            (core + eval + text + dev extras)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
CACHE="${ARGEN_CACHE:-$HOME/.cache/argen}"

log() { echo "[setup] $*"; }

# 1. torch. With an NVIDIA GPU: PyPI's default (CUDA) build. Without one: PyTorch's CPU-only wheels (a few hundred
#    MB instead of ~3 GB of CUDA libraries); where that index cannot be reached (offline mirrors), the default
#    build, which runs on the CPU too. TORCH_INDEX_URL overrides the choice.
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_ok() { $PY -c "import torch, torchvision" 2>/dev/null; }  # a mismatched pair fails here (torchvision::nms)
if ! torch_ok; then
  CPU_INDEX="https://download.pytorch.org/whl/cpu"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    log "installing torch from $TORCH_INDEX_URL"
    $PY -m pip install -q --index-url "$TORCH_INDEX_URL" "torch>=2.4" torchvision
  elif ! has_gpu; then
    if $PY -m pip install -q --index-url "$CPU_INDEX" "torch>=2.4" torchvision 2>/dev/null && torch_ok; then
      log "no NVIDIA GPU: installed PyTorch's CPU-only build"
    else  # unreachable index, or pip mixed a local CPU torch with a CUDA torchvision (they do not import together)
      log "no NVIDIA GPU, but PyTorch's CPU-only wheels from $CPU_INDEX are unavailable or do not import" \
          "together: installing the default build (runs on the CPU too)"
    fi
  fi
  if ! torch_ok; then
    if [ "$(uname -m)" = "x86_64" ]; then
      $PY -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $PY -m pip install -q "torch>=2.4" torchvision
    else
      $PY -m pip install -q "torch==2.9.1" "torchvision==0.24.1" || $PY -m pip install -q "torch>=2.4" torchvision
    fi
    torch_ok || { log "torch and torchvision do not import together: see the error below"; \
                  $PY -c "import torch, torchvision"; exit 1; }
  fi
fi

# 2. argen itself, editable, with the evaluator and test extras.
log "installing argen[eval,text,dev]"
$PY -m pip install -q -e ".[eval,text,dev]"

# 3. Fashion-MNIST from Debian (IDX files under /usr/share/datasets/fashion-mnist/).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  log "installing Debian package dataset-fashion-mnist"
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# 4. Emoji (3,786 colour 64x64 images + names/categories) from the npm registry.
EMOJI_DIR="$CACHE/datasets/emoji-datasource-google-16.0.0"
if [ ! -f "$EMOJI_DIR/package/emoji.json" ]; then
  log "fetching npm package emoji-datasource-google@16.0.0"
  mkdir -p "$EMOJI_DIR"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q emoji-datasource-google@16.0.0 >/dev/null)
  tar -xzf "$tmp"/emoji-datasource-google-16.0.0.tgz -C "$EMOJI_DIR" package/emoji.json package/img/google/64 package/package.json
  rm -rf "$tmp"
fi
log "done"
