#!/usr/bin/env bash
# Install, build the offline sample data, train a small CycleGAN on CPU, translate the test images.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
G=.venv/bin/gantk
NAME=${NAME:-demo_photo2vintage}
$G data sample --out datasets
$G train --model cyclegan --dataroot datasets/photo2vintage --name "$NAME" \
    --netG resnet_6blocks --ngf 24 --ndf 32 --load_size 88 --crop_size 80 \
    --n_epochs ${EPOCHS:-4} --n_epochs_decay ${EPOCHS_DECAY:-4} --save_epoch_freq 4 \
    --print_freq 40 --display_freq 80 --num_threads 1 "$@"
$G translate --name "$NAME" --dataroot datasets/photo2vintage --output "results/$NAME"
echo
echo "Done. Look at:"
echo "  checkpoints/$NAME/web/index.html   sample grids during training"
echo "  checkpoints/$NAME/loss_log.txt     losses"
echo "  results/$NAME/index.html           test images, real | fake"
