import json

import numpy as np
import pandas as pd
import pytest

from bench.sweep_section import paired_per_k
from runfolder.schema import RESULT_COLUMNS


def _results():
    rng = np.random.default_rng(0)
    rows = []
    for method in ("patchcore", "fusion"):
        for k in (1, 2):
            for seed in (0, 1, 2):
                info = {"fused": ["patchcore"]} if method == "fusion" else {}
                rows.append({"method": method, "preset": "offline", "category": "c", "k": k, "seed": seed,
                             "status": "ok", "image_auroc_logical": rng.uniform(0.5, 1), "f1_max": rng.uniform(0.5, 1),
                             "method_info": json.dumps(info)})  # no structural anomalies in this data
    return pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS)


def test_paired_per_k_compares_fusion_with_each_member_at_each_k_on_the_metrics_the_data_has():
    results = _results()
    lines = paired_per_k(results, "fusion")
    rows = [line.split(" | ") for line in lines if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert [(r[0], r[3]) for r in rows] == [("| 1", "image_auroc_logical"), ("| 1", "f1_max"),
                                            ("| 2", "image_auroc_logical"), ("| 2", "f1_max")]
    k2 = results[results["k"] == 2].pivot_table(index="seed", columns="method", values="image_auroc_logical")
    assert float(rows[2][7]) == pytest.approx((k2["fusion"] - k2["patchcore"]).mean(), abs=5e-4)
    with pytest.raises(SystemExit, match="not a fusion variant"):
        paired_per_k(results, "patchcore")
