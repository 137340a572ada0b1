"""Lightning checkpoint files written atomically: a SIGKILL or a full disk never leaves half of one."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from isam2.files import atomic_file, remove_stale_temporaries


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but a local file goes through `isam2.files.atomic_file` (a temporary
    sibling, fsync, rename), so `last.ckpt` is always a whole checkpoint, the previous or the new one.

    Lightning's own write puts the bytes in a file of the system temp dir and then `shutil.move`s it: a rename
    only when that dir is on the checkpoint's file system; otherwise (node-local /tmp and a shared run dir,
    the usual cluster layout) a copy into the checkpoint's own path, which a kill or a full disk leaves
    half-written; and it never fsyncs. Temporary checkpoint files of a killed writer are removed at the next
    save into their folder.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or get_protocol(str(path)) not in ("file", "local"):
            return super().save_checkpoint(checkpoint, path, storage_options)  # remote: Lightning's way
        path = Path(path)
        remove_stale_temporaries(path.parent, "*.ckpt")
        data = io.BytesIO()  # serialised first: a failed write then raises its own OSError, not torch's
        torch.save(checkpoint, data)
        with atomic_file(path) as f:
            f.write(data.getbuffer())
