"""Column orders of the CSVs people read: defined once here, imported by the runner."""

RESULT_COLUMNS: tuple[str, ...] = (
    "method", "preset", "category", "k", "seed", "status", "n_good", "n_logical", "n_structural",
    "image_auroc", "image_auroc_logical", "image_auroc_structural", "image_auroc_mean", "f1_max",
    "pixel_auroc", "aupro_0.3", "auspro_0.05", "auspro_logical_0.05", "auspro_structural_0.05",
    "fit_s", "predict_s", "method_info",
)

METRIC_COLUMNS: tuple[str, ...] = RESULT_COLUMNS[RESULT_COLUMNS.index("image_auroc"):RESULT_COLUMNS.index("fit_s")]
TIMING_COLUMNS: tuple[str, ...] = ("fit_s", "predict_s")
CELL_KEY: tuple[str, ...] = ("method", "preset", "category", "k", "seed")

SCORE_COLUMNS: tuple[str, ...] = ("image", "kind", "label", "score")  # then one column per extra
