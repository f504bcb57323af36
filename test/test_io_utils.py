"""Atomic writes: all-or-nothing, normal permissions, no temp files left behind."""
from __future__ import annotations

import os
import stat

import pytest

from wps_sam_core.io_utils import atomic_path, atomic_write_text


def test_atomic_write_has_umask_permissions(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_text(path, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_safetensors_outputs_get_umask_permissions(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    with atomic_path(path) as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))  # safetensors itself writes 0600 files
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_failure_keeps_old_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
