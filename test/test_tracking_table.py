"""training/tracking_table.py on one short clip: the docs section is written between its markers, replaced on a
rerun, and the rest of the file is kept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("motmetrics", reason="py-motmetrics (pip, train extra) not installed")

from wps_sam_core.embedded import embedded_available  # noqa: E402

from conftest import load_module_from  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def load_script():
    return load_module_from(REPO / "training" / "tracking_table.py", "tracking_table")


@pytest.mark.skipif(not embedded_available(), reason="embedded default model not built yet")
def test_tracking_table_writes_its_section_and_keeps_the_rest(tmp_path):
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nkept before\n")
    script = load_script()
    threads = torch.get_num_threads()
    try:
        argv = ["--clips-dir", str(tmp_path / "clips"), "--clips", "1", "--frames", "3", "--size", "96",
                "--grid", "0.3", "0.1", "--out", str(out), "--json", str(tmp_path / "reports.json")]
        assert script.main(argv) == 0  # renders the clips
        assert (tmp_path / "clips" / "images" / "test" / "0000" / "000002.png").is_file()
        first = out.read_text()
        out.write_text(first + "\nkept after\n")
        assert script.main(argv) == 0  # reuses them
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert text.startswith("# Results\n\nkept before\n") and text.rstrip().endswith("kept after")
    assert text.count(script.TRACK_BEGIN) == text.count(script.TRACK_END) == 1
    section = text.split(script.TRACK_BEGIN)[1].split(script.TRACK_END)[0]
    assert "## Tracking on world clips" in section and "| SAM + GT boxes | tracker |" in section
    assert "| 0.3 (default) |" in section and "| 0.1 |" in section and "1 clips x 3 frames" in section
    reports = json.loads((tmp_path / "reports.json").read_text())
    assert set(reports) == {"0.3", "0.1"} and reports["0.1"]["tracker"]["match_iou"] == 0.1
    assert set(reports["0.3"]["methods"]) == {"gt_masks", "gt_boxes", "prompter"}
