#!/usr/bin/env bash
# The GPU runs of docs/benchmarks.md in one go, on one H100/H200 (about 10 minutes of the
# 15 a session may get). From the device tool, in the repository root:
#     run(command="bash bench/gpu.sh", timeout_s=600)
# It uses the machine's own Python (torch, transformers, peft are there) with apa from src/,
# and writes each table to $OUT (or runs/gpu) as it goes, so a cut run keeps what finished.
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
out=${OUT:-runs/gpu}
mkdir -p "$out"
python3 -c "import torch; print(torch.cuda.get_device_name(), torch.__version__)" | tee "$out/device.txt"

# Inference at the real 7B dimensions (random weights): naive generate, slot by slot, parallel passes.
python3 bench/inference_throughput.py --shape real --naive-batch-sizes 1,32 --batch-sizes 1,32 --warmup 1 \
    2>"$out/inference_qwen2-audio.log" | tee "$out/inference_qwen2-audio.md"
# The other backbones at their real dimensions: batch 1 (a learner waiting) and 32.
for backbone in qwen2.5-omni phi4-mm granite-speech; do
    python3 bench/inference_throughput.py --backbone "$backbone" --shape real --naive-batch-sizes 1 \
        --batch-sizes 1,32 --warmup 1 2>"$out/inference_$backbone.log" | tee "$out/inference_$backbone.md" || true
done
# Training at the real 7B dimensions: the stock loss beside apa's step, LoRA r=8.
python3 bench/train_throughput.py --shape real --steps 5 --warmup 2 --batch-sizes 1,8 --naive-batch-sizes 1 \
    2>"$out/train_qwen2-audio.log" | tee "$out/train_qwen2-audio.md"

# The engines (README, --engine): vLLM beside apa's decoders at the real Qwen2-Audio dimensions
# (4 layers, random weights in the release layout), batches of 32 / 256 / 1024 generated clips.
if python3 -c "import vllm" 2>/dev/null; then
    python3 bench/engines.py --shape real --layers 4 --limit 1024 --batch-sizes 32,256,1024 --naive-batch-sizes 32 \
        --dtype bfloat16 --device cuda 2>"$out/engines.log" | tee "$out/engines.md" || true
else
    echo "vLLM is not installed on this machine: the engine comparison was skipped" | tee "$out/engines.md"
fi
