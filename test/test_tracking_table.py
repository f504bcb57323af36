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
                "--out", str(out), "--json", str(tmp_path / "reports.json")]
        assert script.main(argv) == 0  # renders the clips
        for split in ("val", "test"):
            assert (tmp_path / "clips" / "images" / split / "0000" / "000002.png").is_file()
        first = out.read_text()
        out.write_text(first + "\nkept after\n")
        assert script.main(argv) == 0  # reuses them
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert text.startswith("# Results\n\nkept before\n") and text.rstrip().endswith("kept after")
    assert text.count(script.TRACK_BEGIN) == text.count(script.TRACK_END) == 1
    section = text.split(script.TRACK_BEGIN)[1].split(script.TRACK_END)[0]
    assert "## Tracking on world clips" in section and "1 clips x 3 frames" in section
    for row in ("| mask | SAM + GT boxes | tracker |", "| box | SAM + GT boxes | tracker |",
                "| mask | SAM + GT boxes | previous |", "| mask | SAM + GT boxes | shipped |"):
        assert row in section, row
    assert "### Choosing the tracker's defaults (val clips)" in section and "differs from the val choice" not in \
        section.split("Chosen on val")[0]
    reports = json.loads((tmp_path / "reports.json").read_text())
    assert set(reports) == {"val", "test_previous", "test_shipped"} and len(reports["val"]) == len(script.GRID)
    assert reports["test_previous"]["tracker"]["track_min_hits"] == 2
    assert reports["test_shipped"]["second_stage_box_iou"] == script.SECOND_STAGE_BOX_IOU
    shipped = reports["test_shipped"]["methods"]["gt_boxes"]["tracker"]
    assert 0 <= shipped["hota"] <= 1 and set(shipped["fn_causes"]) == {"no_mask", "warm_up", "track_restarted", "other"}
