# GPU image for clusters (A100 = sm_80, H100 = sm_90): the torch the tests run on, sam2 built with its CUDA
# extension (sam2._C), isam2 with the SLURM launcher, run as a non-root user.
#   docker build -t isam2 .
#   docker run --gpus all --shm-size=16g -e WANDB_API_KEY -e WANDB_ENTITY -e WANDB_PROJECT \
#     -v /data:/workspace/isam2/data -v /ckpt:/ckpt -v $PWD/stores:/workspace/isam2/stores \
#     -v $PWD/outputs:/workspace/isam2/outputs isam2 isam2.train experiment=vspw_isam2 \
#     data.root=/workspace/isam2/data/VSPW_480p sam2.checkpoint=/ckpt/sam2.1_hiera_large.pt
# Base: NVIDIA's CUDA 13.0 devel image (nvcc and headers to compile sam2._C), with torch installed from its
# pinned release, which is built for CUDA 13.0 (the torch 2.14.1+cu130 of the tests). The same pins as the
# Makefile: tests/test_containers.py checks both, and the base image's CUDA against the tests' torch.
FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    SAM2_BUILD_CUDA=1 \
    SAM2_BUILD_ALLOW_ERRORS=0 \
    TORCH_CUDA_ARCH_LIST="8.0;9.0" \
    ISAM2_ROOT=/workspace/isam2

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip setuptools wheel

# torch first, then sam2 built against it without build isolation (isolation would fetch a second torch);
# SAM2_BUILD_ALLOW_ERRORS=0: a failed sam2._C build fails the image instead of installing sam2 without it.
# No GPU is needed at build time: TORCH_CUDA_ARCH_LIST names the targets.
RUN pip install "torch==2.14.1" "torchvision==0.29.1"
RUN pip install --no-build-isolation "sam2==1.1.0"

WORKDIR /workspace/isam2
COPY pyproject.toml README.md ./
COPY isam2 ./isam2
COPY conf ./conf
# editable: Hydra reads conf/ beside the package (isam2/cli.py: config_path="../conf")
RUN pip install -e ".[slurm]"
COPY scripts ./scripts

# Non-root; the mount points of conf/paths/default.yaml (ISAM2_ROOT=/workspace/isam2) belong to it.
RUN useradd --create-home --uid 1000 isam2 \
    && mkdir -p data stores outputs /ckpt \
    && chown -R isam2:isam2 data stores outputs /ckpt
USER isam2
# data (paths.data_dir), SAM2 checkpoints, masklet stores (paths.store_dir), runs (paths.log_dir).
# wandb: pass WANDB_API_KEY (and WANDB_ENTITY, WANDB_PROJECT, WANDB_MODE) with `docker run -e`; never baked in.
# Without a key, runs log offline into the run folder (`wandb sync` later).
VOLUME ["/workspace/isam2/data", "/ckpt", "/workspace/isam2/stores", "/workspace/isam2/outputs"]

ENTRYPOINT ["python", "-m"]
CMD ["isam2.train"]
