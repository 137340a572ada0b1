#!/usr/bin/env bash
# Submit a SLURM job with its log folder in place: sbatch opens --output (logs/slurm/, relative to the submit
# directory) before the job's script runs, so a mkdir inside the script comes too late. Run from anywhere:
#   scripts/slurm/submit.sh --nodes=2 --gpus-per-node=4 --ntasks-per-node=4 scripts/slurm/train.sbatch \
#       experiment=vspw_isam2 sam2.checkpoint=/ckpt/sam2.1_hiera_large.pt data.root=/data/VSPW_480p
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p logs/slurm
exec sbatch "$@"
