#!/usr/bin/env bash
# One short GPU check of render speed (issue 5), about 4-6 minutes on an H100 or H200.
#
# SD-1.5-shaped U-Net/VAE with random weights (speed does not depend on the weights),
# fp16, 512 x 512, 50 steps, CFG 7.5, on one CUDA device, all in one process:
#   (a) StableDiffusionPipeline, one frame per call (first 8 frames),
#   (b) the same pipeline, 16 frames (one path) per call, compiled channels-last U-Net,
#   (c) otpc's Renderer, 32 frames per batch, compiled U-Net, frames written to a cache.
# Prints s/image, the ratios (a)/(c) and (b)/(c), (c)'s share of the compute floor and
# peak GPU memory. Compare with the reference in shared/docs/study.md (H200, torch 2.11):
# (a) 1.386 s/image, (b) uncompiled 0.319, compiled 0.233; U-Net floor 0.107 s/image.
#
# No pip: torch, diffusers, transformers, safetensors, pillow and tqdm must be importable.
# Run from anywhere: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export OTPC_HOME="${OTPC_HOME:-$(mktemp -d)}"
PY="${PYTHON:-python3}"

"$PY" - <<'EOF'
import sys
try:
    import diffusers, torch, transformers
except ImportError as err:
    sys.exit(f"missing package ({err}); carry it as a wheel (diffusers needs importlib_metadata)")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, diffusers "
      f"{diffusers.__version__}, transformers {transformers.__version__}")
if not torch.cuda.is_available():
    sys.exit("no CUDA device")
print("gpu:", torch.cuda.get_device_name(0))
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

timeout 480 "$PY" benchmarks/render.py --arch sd15 --device cuda --dtype float16 \
  --size 512 --steps 50 --guidance 7.5 --paths 4 --frames 16 --batch-size 32 \
  --decode-batch-size 8 --a-frames 8 --compile --compile-mode default
