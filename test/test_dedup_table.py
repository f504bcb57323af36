"""training/dedup_table.py on a 2-image world: the docs section is written between its markers, replaced on a
rerun, and the rest of the file is kept."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import load_module_from

REPO = Path(__file__).resolve().parents[1]


def load_script():
    return load_module_from(REPO / "training" / "dedup_table.py", "dedup_table")


def test_dedup_table_writes_its_section_and_keeps_the_rest(tmp_path):
    from wps_sam_core.data.world import write_world

    write_world(tmp_path / "world", 2, 2, 256, "val")
    write_world(tmp_path / "world", 2, 3, 256, "test")
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nkept before\n")
    script = load_script()
    threads = torch.get_num_threads()
    try:
        argv = ["--data", str(tmp_path / "world"), "--grid", "0.5", "--methods", "merge", "--out", str(out),
                "--json", str(tmp_path / "rows.json")]
        assert script.main(argv) == 0
        first = out.read_text()
        out.write_text(first + "\nkept after\n")
        assert script.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert text.startswith("# Results\n\nkept before\n") and text.rstrip().endswith("kept after")
    assert text.count(script.DEDUP_BEGIN) == text.count(script.DEDUP_END) == 1
    section = text.split(script.DEDUP_BEGIN)[1].split(script.DEDUP_END)[0]
    assert "| off |" in section and "| merge 0.5 |" in section and "prompter, off" in section
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert set(rows["val"]) == {"off", "merge 0.5"} and "off" in rows["test"]
    for split in ("val", "test"):
        for setting in rows[split].values():
            for method in ("gt_boxes", "prompter"):
                assert {"pq", "ap", "duplicates_per_gt", "mIoU"} <= set(setting[method])
