#!/usr/bin/env bash
# Install, build the offline sample data, train a small CycleGAN on CPU, translate the test images,
# export it (ONNX, fp16 ONNX, AOTInductor, Triton repository) with parity checks, and bench it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
G=.venv/bin/gantk
NAME=${NAME:-demo_photo2vintage}
$G data sample --out datasets
$G train --model cyclegan --dataroot datasets/photo2vintage --name "$NAME" \
    --netG resnet_6blocks --ngf 24 --ndf 32 --load_size 88 --crop_size 80 \
    --n_epochs ${EPOCHS:-4} --n_epochs_decay ${EPOCHS_DECAY:-4} --save_epoch_freq 4 \
    --print_freq 40 --display_freq 80 --num_threads 1 --overwrite "$@"
$G translate --name "$NAME" --dataroot datasets/photo2vintage --output "results/$NAME"
# Quality: the vintage look is a known function of the photo, so each test photo's true translation is known.
.venv/bin/python -c "from gantk.data.sample import write_vintage_targets as w; w('datasets/photo2vintage/testA', 'results/$NAME/images')"
# --baseline also scores the test photos themselves (identity): training has learned something only if it beats that.
$G eval --results "results/$NAME/images" --paired --baseline --out "results/$NAME/eval.json"
# Deployable artifacts, each checked against PyTorch on real photos (fails on a parity miss).
$G export --name "$NAME" --format onnx,onnx-fp16,aoti,triton-repo --out "exports/$NAME" \
    --max_batch 4 --max_size 512 --parity_sizes 128,256
# Short speed + parity bench of the trained generator on this machine. AMP is left out here: bf16
# autocast runs ~100x slower than fp32 on CPUs without AVX512-BF16/AMX (see benchmarks/results).
$G bench --name "$NAME" --device cpu --sizes 128 --batches 1,4 --warmup 1 --repeats 5 \
    --backends eager,channels_last,compile,winograd,aoti,ort-cpu,triton,trt-fp32 --out "bench/$NAME"
echo
echo "Done. Look at:"
echo "  checkpoints/$NAME/web/index.html   sample grids during training"
echo "  checkpoints/$NAME/loss_log.txt     losses"
echo "  results/$NAME/index.html           test images, real | fake"
echo "  results/$NAME/eval.json            PSNR / SSIM / MAE of the translations against the true vintage photos,"
echo "                                     and of the photos themselves (baseline: a translation must beat it)"
echo "  exports/$NAME/                     ONNX (fp32, fp16), AOTInductor .pt2, Triton repository, manifest.json"
echo "  bench/$NAME.md (.json, .png)       latency and parity per backend"
