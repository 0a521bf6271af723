"""liverlib.reporting.tables: Table 2 from the profile, cache statistics, atomic csv + markdown output."""

from __future__ import annotations

import pandas as pd
import pytest

from liverlib import config
from liverlib.reporting import tables


def test_table2_paper_profile_reproduces_the_paper():
    table = tables.table2(config.resolve("paper"))
    assert list(table.columns) == ["paper", "this run", "note"]
    assert table.loc["Profile", "this run"] == "paper"
    rows = table.drop(index="Profile")
    assert list(rows.index) == list(tables.PAPER_TABLE2)
    mismatched = rows[rows["paper"] != rows["this run"]]
    assert mismatched.empty, mismatched
    # The values the paper states (Table 2, sections 3.2 and 3.4).
    assert rows.loc["Learning rate", "paper"] == "1e-5"
    assert rows.loc["Batch size", "paper"] == "32"
    assert rows.loc["Number of training iterations (epochs)", "paper"] == "20"
    assert rows.loc["dropout", "paper"] == "0.5"
    assert rows.loc["Number of layers", "paper"].startswith("9 ")
    assert rows.loc["Input size", "paper"] == "96×96"


def test_table2_reports_what_the_run_changed():
    cfg = config.resolve("paper", ["model.base_filters=8", "model.depth=3", "model.pooling=max",
                                   "train.learning_rate=3e-3", "train.batch_size=16", "train.epochs=6",
                                   "train.steps_per_epoch=30", "train.loss=bce_dice", "preprocess.size=64"])  # fmt: skip
    run = tables.table2(cfg)["this run"]
    assert run["Profile"] == "paper"
    assert run["Number of layers"] == "7 (3 down, bottom, 3 up), 2 convolutions each"
    assert run["Filters per level"] == "8-16-32-64"
    assert run["Mixed pooling layer"] == "2×2 max (ablation)"
    assert run["Learning rate"] == "0.003"
    assert run["Batch size"] == "16"
    assert run["Number of training iterations (epochs)"] == "6 × 30 steps"
    assert run["loss"] == "cross-entropy + soft Dice per slice"
    assert run["Input size"] == "64×64"
    assert tables.table2(config.resolve("smoke"))["this run"]["Profile"] == "smoke"


def test_table2_shows_where_the_lesion_network_differs():
    cfg = config.resolve("paper", ["lesion_stage.model.output_prior=0.01", "lesion_stage.model.dropout=0",
                                   "lesion_stage.train.ema_momentum=0.95"])
    run = tables.table2(cfg)["this run"]
    assert run["dropout"] == "0.5 (lesion network: 0)"
    assert run["Optimizer"] == "Adam (lesion network: Adam + weight EMA 0.95)"
    assert run["Output layer"] == "1×1 convolution, sigmoid (lesion network: 1×1 convolution, sigmoid, bias initialized to logit(0.01))"
    assert run["Learning rate"] == "1e-5"  # shared settings are written once


def test_write_table_csv_and_markdown(tmp_path):
    df = pd.DataFrame({"paper": ["a|b", "2"], "this run": ["x", "3"]},
                      index=pd.Index(["one", "two"], name="parameter"))  # fmt: skip
    csv, md = tables.write_table(df, tmp_path / "tables", "t2")
    assert csv == tmp_path / "tables" / "t2.csv" and md == tmp_path / "tables" / "t2.md"
    back = pd.read_csv(csv, index_col="parameter", dtype=str)
    pd.testing.assert_frame_equal(back, df)
    assert md.read_text().splitlines() == [
        "| parameter | paper | this run |",
        "| --- | --- | --- |",
        "| one | a\\|b | x |",
        "| two | 2 | 3 |",
    ]
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["t2.csv", "t2.md"]  # no temporary left
    # A plain range index is left out.
    csv, md = tables.write_table(df.reset_index(), tmp_path, "plain")
    assert csv.read_text().splitlines()[0] == "parameter,paper,this run"
    with pytest.raises(ValueError, match="plain file name"):
        tables.write_table(df, tmp_path, "../escape")


def test_cache_stats_table_totals():
    stats = pd.DataFrame({
        "case": [0, 3], "planes": [100, 50],
        "stage1_slices": [40, 10], "stage1_liver_slices": [30, 8], "stage1_liver_fraction": [0.1, 0.2],
        "stage2_slices": [30, 0], "stage2_lesion_slices": [5, 0], "stage2_lesion_fraction": [0.02, 0.0],
        "roi": [[1, 2, 3, 4], None], "shape": [[100, 8, 8], [50, 8, 8]], "spacing": [[1, 1, 1]] * 2,
    })  # fmt: skip
    table = tables.cache_stats_table(stats)
    assert list(table.index) == ["0", "3", "total"]
    total = table.loc["total"]
    assert total["planes"] == 150 and total["stage1_slices"] == 50 and total["stage2_lesion_slices"] == 5
    # Pixel-weighted: (0.1 * 40 + 0.2 * 10) / 50 and (0.02 * 30 + 0 * 0) / 30.
    assert total["stage1_liver_fraction"] == pytest.approx(0.12)
    assert total["stage2_lesion_fraction"] == pytest.approx(0.02)
    assert "roi" not in table.columns
    markdown = tables.to_markdown(table).splitlines()
    assert markdown[-1] == "| total | 150 | 50 | 38 | 0.12 | 30 | 5 | 0.02 |"
    with pytest.raises(ValueError, match="SliceCache.stats"):
        tables.cache_stats_table(stats.drop(columns="planes"))
