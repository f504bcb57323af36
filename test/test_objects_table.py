"""training/objects_table.py on a 2-image world: its docs section is written between its markers, replaced on a
rerun, the rest of the file kept; the JSON has every setting for every source."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import load_module_from

REPO = Path(__file__).resolve().parents[1]


def test_objects_table_writes_its_section_and_keeps_the_rest(tmp_path):
    from wps_sam_core.data.world import write_world

    write_world(tmp_path / "world", 2, 2, 256, "val")
    write_world(tmp_path / "world", 2, 3, 256, "test")
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nkept before\n")
    script = load_module_from(REPO / "training" / "objects_table.py", "objects_table")
    threads = torch.get_num_threads()
    try:
        argv = ["--data", str(tmp_path / "world"), "--radii", "3", "--gaps", "12", "--out", str(out),
                "--json", str(tmp_path / "rows.json")]
        assert script.main(argv) == 0
        out.write_text(out.read_text() + "\nkept after\n")
        assert script.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    text = out.read_text()
    assert text.startswith("# Results\n\nkept before\n") and text.rstrip().endswith("kept after")
    assert text.count(script.OBJECTS_BEGIN) == text.count(script.OBJECTS_END) == 1
    section = text.split(script.OBJECTS_BEGIN)[1].split(script.OBJECTS_END)[0]
    assert "| attach, radius 3 px, max gap 12 | GT masks |" in section and "| class | prompter |" in section
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows["chosen_on_val"] == "attach, radius 3 px, max gap 12"
    assert set(rows["val"]) == {"attach, radius 3 px, max gap 12", "attach_touching, radius 3 px",
                                "touch, radius 3 px", "class", "none"}
    for setting in rows["val"].values():
        assert set(setting) == {"GT masks", "SAM + GT boxes", "prompter"}
        assert setting["GT masks"]["matched_parts"] == setting["GT masks"]["gt_parts"] > 0  # GT masks match themselves
