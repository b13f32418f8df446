"""The ablation grid, one module per job: variants (which configs), lookup (which MLflow runs hold a config),
grid (train the missing points), collect (read the runs back), summary (mean ± std over seeds), report
(docs/RESULTS.md)."""
