#!/usr/bin/env bash
# A cohort on a SLURM cluster with `medseg batch`: one Dask worker per GPU job.
#
#   bash docs/slurm-example.sh INPUT OUTDIR
#
# INPUT is what `medseg batch` takes: a BIDS dataset, a folder of scans or DICOM series, or a
# CSV file with a `path` column. Run this from a login node inside `tmux`/`screen` (or from a
# small CPU job with a long time limit): the Dask scheduler and the progress line live in
# this process, and it submits the worker jobs itself through dask-jobqueue. If it stops
# (Ctrl-C, the login session ends, a worker job hits its time limit), run the same line
# again: finished cases are skipped, half-written ones are redone.
#
# Needs: pip install 'napari-medseg[cohort]' in an environment the compute nodes can see
# (a shared file system); INPUT and OUTDIR on a shared file system too.
set -euo pipefail

INPUT=${1:?usage: slurm-example.sh INPUT OUTDIR}
OUTDIR=${2:?usage: slurm-example.sh INPUT OUTDIR}

# Site settings: change these to your cluster's partition, account and limits.
PARTITION=${PARTITION:-gpu}
ACCOUNT=${ACCOUNT:-}
WORKERS=${WORKERS:-8}            # jobs (one worker and one model each); scale to the GPUs you may hold
WALLTIME=${WALLTIME:-04:00:00}   # per worker job; a job that ends early only loses its case in flight

args=(
    "$INPUT" -o "$OUTDIR"
    --model brain-tissue-unet
    --scheduler slurm
    --workers "$WORKERS"
    --gpus-per-worker 1          # adds #SBATCH --gres=gpu:1; the worker runs on that GPU
    --threads-per-worker 8       # --cpus-per-task=8: reading, resampling and writing run on the CPU
    --memory 32GB
    --queue "$PARTITION"
    --walltime "$WALLTIME"
    --retries 2                  # a failing case is tried 3 times, then recorded as failed
)
if [[ -n "$ACCOUNT" ]]; then
    args+=(--account "$ACCOUNT")
fi
# Further #SBATCH lines, one --job-extra each, e.g.:
#   args+=(--job-extra=--constraint=a100 --job-extra=--qos=long)

exec medseg -v batch "${args[@]}"
