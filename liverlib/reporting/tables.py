"""Tables of the run: the paper's Table 2 against this run, cache statistics, and writing them.

Every table is a ``pandas.DataFrame`` written by :func:`write_table` as ``.csv``
and ``.md`` side by side, atomically. The markdown is written here (pandas'
``to_markdown`` needs the optional ``tabulate`` package).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from liverlib.atomic import atomic_path, write_text
from liverlib.config import stage_config
from liverlib.data.sources import data_source
from liverlib.evaluation.summary import summarize

__all__ = ["PAPER_TABLE2", "cache_stats_table", "table2", "to_markdown", "write_table"]

# The paper's Table 2 (section 4.1), plus what its text says of the same settings
# (sections 3.2 and 3.4): worded as table2() words a config, so that the paper
# profile reproduces this column exactly.
PAPER_TABLE2 = {
    "Number of layers": "9 (4 down, bottom, 4 up), 2 convolutions each",
    "Filters per level": "64-128-256-512-1024",
    "Mixed pooling layer": "2×2 mixed",
    "Convolution": "3×3",
    "Activation function": "ReLU",
    "Output layer": "1×1 convolution, sigmoid",
    "Optimizer": "Adam",
    "dropout": "0.5",
    "Learning rate": "1e-5",
    "Batch size": "32",
    "Number of training iterations (epochs)": "20",
    "loss": "cross-entropy",
    "Input size": "96×96",
}

_LOSSES = {"bce": "cross-entropy", "bce_dice": "cross-entropy + soft Dice per slice",
           "bce_batch_dice": "cross-entropy + soft Dice over the batch"}
_NOTES = {
    "Filters per level": "the paper's table gives none; the U-Net widths it modifies",
    "Mixed pooling layer": "training: max or average at random; inference: {inference}",
    "Output layer": "section 3.4",
    "Number of training iterations (epochs)": "{steps}",
    "Input size": "section 3.2: 512×512 slices resized to 96×96",
}


def _number(value: float) -> str:
    """A number as the paper writes it: 0.5, 1e-5, 32."""
    text = f"{float(value):g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _settings(cfg: dict) -> dict[str, str]:
    """The Table 2 rows of one network's config, worded as ``PAPER_TABLE2``."""
    model, train = cfg["model"], cfg["train"]
    normalization = model.get("normalization", "none")  # runs made before the key had none
    prior = float(model.get("output_prior", 0.5))
    ema = float(train.get("ema_momentum", 0.0))  # runs made before the key had none
    depth, base = int(model["depth"]), int(model["base_filters"])
    size = int(cfg["preprocess"]["size"])
    steps = int(train.get("steps_per_epoch", 0))
    epochs = str(int(train["epochs"])) if not steps else f"{int(train['epochs'])} × {steps} steps"
    pooling = {"mixed": "2×2 mixed", "max": "2×2 max (ablation)", "avg": "2×2 average (ablation)"}[model["pooling"]]
    return {
        "Number of layers": f"{2 * depth + 1} ({depth} down, bottom, {depth} up), 2 convolutions each",
        "Filters per level": "-".join(str(base * 2**k) for k in range(depth + 1)),
        "Mixed pooling layer": pooling,
        "Convolution": "3×3" + ("" if normalization == "none" else f", {normalization} normalization"),
        "Activation function": "ReLU",
        "Output layer": "1×1 convolution, sigmoid" + ("" if prior == 0.5 else f", bias initialized to logit({_number(prior)})"),
        "Optimizer": "Adam" + (f" + weight EMA {_number(ema)}" if ema else ""),
        "dropout": _number(model["dropout"]),
        "Learning rate": _number(train["learning_rate"]),
        "Batch size": str(int(train["batch_size"])),
        "Number of training iterations (epochs)": epochs,
        "loss": _LOSSES[train["loss"]],
        "Input size": f"{size}×{size}",
    }

def table2(cfg: dict) -> pd.DataFrame:
    """The paper's Table 2 beside the same settings of a run's config.

    Parameters
    ----------
    cfg : dict
        A resolved config (``liverlib.config.resolve`` or ``runfolder.load_run``);
        reads ``profile``, ``model``, ``train``, ``lesion_stage`` and ``preprocess.size``.

    Returns
    -------
    pandas.DataFrame
        Index ``parameter``; columns ``paper``, ``this run`` and ``note``. The
        first row is the profile. With the ``paper`` profile every other row of
        ``this run`` equals ``paper``.
    """
    liver, lesion = (_settings(stage_config(cfg, stage)) for stage in ("liver", "lesion"))
    # One column for both networks; a setting of the lesion network that differs is added in brackets.
    this_run = {k: v if lesion[k] == v else f"{v} (lesion network: {lesion[k]})" for k, v in liver.items()}
    model, train = cfg["model"], cfg["train"]
    normalization = model.get("normalization", "none")
    steps = int(train.get("steps_per_epoch", 0))
    inference = {"expectation": "the expectation 0.5·max + 0.5·avg", "majority": "the type chosen more often in training",
                 "max": "max", "avg": "average"}[model.get("mixed_inference", "expectation")]  # fmt: skip
    step_note = "an epoch is one pass over the training slices" if not steps else f"an epoch is {steps} batches"
    notes = {k: v.format(inference=inference, steps=step_note) for k, v in _NOTES.items()}
    if normalization != "none":
        notes["Convolution"] = "normalization before each ReLU: lets the narrow network converge in a short budget"
    if model["pooling"] != "mixed":
        notes["Mixed pooling layer"] = "an ablation: the same network with plain pooling"
    rows = [{"parameter": "Profile", "paper": "paper", "this run": str(cfg.get("profile", "")), "note": ""}]
    rows += [{"parameter": k, "paper": PAPER_TABLE2[k], "this run": this_run[k], "note": notes.get(k, "")}
             for k in PAPER_TABLE2]  # fmt: skip
    return pd.DataFrame(rows).set_index("parameter")


def cache_stats_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Slices kept per stage and class balance, per case and in total.

    Parameters
    ----------
    stats : pandas.DataFrame
        :meth:`liverlib.data.cache.SliceCache.stats`.

    Returns
    -------
    pandas.DataFrame
        Index ``case`` (the cases, then ``total``); columns ``planes``,
        ``stage1_slices``, ``stage1_liver_slices``, ``stage1_liver_fraction``,
        ``stage2_slices``, ``stage2_lesion_slices``, ``stage2_lesion_fraction``.
        A fraction is the share of mask pixels in that stage's slices; its total is
        over all slices (every slice has the same number of pixels).
    """
    counts = ["planes", "stage1_slices", "stage1_liver_slices", "stage2_slices", "stage2_lesion_slices"]
    fractions = {"stage1_liver_fraction": "stage1_slices", "stage2_lesion_fraction": "stage2_slices"}
    columns = ["planes", "stage1_slices", "stage1_liver_slices", "stage1_liver_fraction",
               "stage2_slices", "stage2_lesion_slices", "stage2_lesion_fraction"]  # fmt: skip
    missing = [c for c in ["case", *columns] if c not in stats.columns]
    if missing:
        raise ValueError(f"cache statistics lack column(s) {', '.join(missing)}; pass SliceCache.stats()")
    table = stats[["case", *columns]].copy()
    table["case"] = table["case"].astype(str)
    total = {c: int(table[c].sum()) for c in counts}
    for fraction, slices in fractions.items():
        n = table[slices].sum()
        total[fraction] = float((table[fraction] * table[slices]).sum() / n) if n else 0.0
    table = pd.concat([table, pd.DataFrame([{"case": "total", **total}])], ignore_index=True)
    table[counts] = table[counts].astype(int)
    for fraction in fractions:
        table[fraction] = table[fraction].astype(float).round(4)
    return table.set_index("case")


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured markdown table of ``df`` (index first, when ``index``)."""
    header = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for key, *row in df.astype(object).itertuples(name=None):  # object: ints stay ints
        cells = ([key] if index else []) + row
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, tables_dir: str | Path, name: str, index: bool | None = None) -> tuple[Path, Path]:
    """Write ``df`` as ``tables_dir/name.csv`` and ``tables_dir/name.md``, each atomically.

    Parameters
    ----------
    df : pandas.DataFrame
    tables_dir : str or Path
        Created if missing (``RunFolder.tables``).
    name : str
        File name without suffix.
    index : bool, optional
        Write the index as the first column; default: when it is not a plain
        ``0..n-1`` range.

    Returns
    -------
    (Path, Path)
        The csv and markdown files.
    """
    if not name or Path(name).name != name:
        raise ValueError(f"name must be a plain file name without folders, got {name!r}")
    if index is None:
        index = not isinstance(df.index, pd.RangeIndex) or df.index.name is not None
    folder = Path(tables_dir)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=index)
    write_text(md, to_markdown(df, index=index))
    return csv, md


# --------------------------------------------------------------------------- the 10-fold Dice tables

#: The paper's reported Dice (abstract, sections 4.2, 4.3): LiTS, 10-fold, after its 3D CRF.
PAPER_DICE = {"liver": "0.89-0.90", "lesion": "0.65"}


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def dice_fold_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The 10-fold table: per fold, liver and lesion Dice (per-case mean and global), before and after the CRF.

    The last rows are the mean ± std over the folds, and the per-case mean and
    global Dice over all test cases pooled.

    Parameters
    ----------
    metrics : pandas.DataFrame
        The long-format ``metrics.csv`` (``fold``, ``crf``, ``structure``, ``dice``, counts...).
    """
    summary = summarize(metrics, by=["fold", "crf"])
    summary["column"] = summary["structure"] + " " + summary["crf"].map({0: "no CRF", 1: "CRF"})
    wide = {}
    for kind, label in (("dice_per_case", "per case"), ("dice_global", "global")):
        part = summary.pivot(index="fold", columns="column", values=kind)
        part.columns = [f"{c}, {label}" for c in part.columns]
        wide.update(part.to_dict())
    order = [f"{s} {c}, {k}" for s in ("liver", "lesion") for k in ("per case", "global") for c in ("no CRF", "CRF")]
    table = pd.DataFrame(wide)[order]
    table.index = table.index.map(lambda f: f"fold {f}")
    cases = metrics[metrics["structure"] == "liver"].groupby("fold")["case"].nunique()
    table.insert(0, "test scans", cases.to_numpy())
    formatted = table.map(lambda v: f"{v:.3f}" if isinstance(v, float) else v).astype(object)
    formatted.loc["mean ± std over folds"] = ["", *(_mean_std(table[c]) for c in order)]
    pooled = summarize(metrics, by=["crf"])
    pooled["column"] = pooled["structure"] + " " + pooled["crf"].map({0: "no CRF", 1: "CRF"})
    pooled_row = [str(int(table["test scans"].sum()))]
    for column in order:
        structure_crf, kind = column.rsplit(", ", 1)
        value = pooled.set_index("column").loc[structure_crf, "dice_per_case" if kind == "per case" else "dice_global"]
        pooled_row.append(f"{value:.3f}")
    formatted.loc["all test scans pooled"] = pooled_row
    formatted.index.name = "fold"
    return formatted


def lesion_free_note(metrics: pd.DataFrame) -> str:
    """How many test cases had no lesion, and the convention used for them."""
    lesion = metrics[(metrics["structure"] == "lesion") & (metrics["crf"] == 1)]
    free = int(lesion["ref_empty"].astype(bool).sum())
    both = int((lesion["ref_empty"].astype(bool) & lesion["pred_empty"].astype(bool)).sum())
    return (
        f"{free} of {len(lesion)} test cases have no lesion in the reference; {both} of them also have none in the "
        "prediction after the CRF and score lesion Dice 1.0 (the LiTS convention), the others 0.0. "
        "Global Dice pools voxels over cases and is not affected by this convention."
    )


def paper_comparison(metrics: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """The paper's reported Dice beside this run's (after the CRF, and before it).

    Parameters
    ----------
    metrics : pandas.DataFrame
        The run's long-format metrics.
    cfg : dict
        The run's config (its data source and profile are stated in the table).
    """
    by_fold = summarize(metrics, by=["fold", "crf"])
    rows = []
    for structure in ("liver", "lesion"):
        row = {"structure": structure, "paper (LiTS, 10-fold)": PAPER_DICE[structure]}
        for crf, name in ((1, "CRF"), (0, "no CRF")):
            part = by_fold[(by_fold["structure"] == structure) & (by_fold["crf"] == crf)]
            row[f"this run, per case, {name}"] = _mean_std(part["dice_per_case"])
            row[f"this run, global, {name}"] = _mean_std(part["dice_global"])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("structure")
    table["this run's data"] = data_source(cfg)
    table["profile"] = cfg["profile"]
    return table
