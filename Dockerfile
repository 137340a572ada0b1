# GPU image for clusters: CUDA PyTorch base; sam2 is built with its CUDA extension (sam2._C).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel
ENV PYTHONUNBUFFERED=1 SAM2_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0"
WORKDIR /workspace/isam2
COPY pyproject.toml README.md ./
COPY isam2 ./isam2
COPY conf ./conf
RUN pip install --no-cache-dir --no-build-isolation "sam2==1.1.0" && pip install --no-cache-dir -e ".[slurm]"
COPY . .
# Mount data, checkpoints and outputs: -v /data:/workspace/isam2/data -v /ckpt:/ckpt
ENTRYPOINT ["python", "-m"]
CMD ["isam2.train"]
