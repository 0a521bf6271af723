"""liverlib.publish: figures and tables copied into the published folder, with a manifest that shows the results."""

from __future__ import annotations

import json

from liverlib import config
from liverlib.publish import publish
from liverlib.runfolder import RunFolder


def test_publish_copies_and_shows_the_fold_and_real_ct_tables(tmp_path):
    run = RunFolder(tmp_path / "run")
    config.write_config(config.resolve("smoke"), run.config)
    for folder in (run.tables, run.figures, run.notebooks):
        folder.mkdir(parents=True, exist_ok=True)
    run.status.write_text(json.dumps({"01_data": {"complete": True, "seconds": 30.0},
                                      "04_liver_training": {"complete": True, "seconds": 90.0}}))
    (run.tables / "dice_10fold.md").write_text("| fold | liver |\n| --- | --- |\n| fold 0 | 0.9 |\n")
    (run.tables / "real_ct.md").write_text("| scan | liver_dice |\n| --- | --- |\n| ct_abdomen_3mm | 0.91 |\n")
    (run.tables / "real_ct.csv").write_text("scan,liver_dice\nct_abdomen_3mm,0.91\n")
    (run.figures / "real_ct_predictions.png").write_bytes(b"\x89PNG")
    manifest = publish(run.root, tmp_path / "figures")
    text = manifest.read_text()
    assert (tmp_path / "figures" / "real_ct_predictions.png").read_bytes() == b"\x89PNG"
    assert (tmp_path / "figures" / "tables" / "real_ct.csv").is_file()
    assert "wall time of the notebooks: 2.0 min (01_data 30 s, 04_liver_training 90 s)" in text
    fold_at, real_at = text.index("## The 10-fold Dice table"), text.index("## Real CT the networks never saw")
    assert fold_at < text.index("| fold 0 | 0.9 |") < real_at < text.index("| ct_abdomen_3mm | 0.91 |")
