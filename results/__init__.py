"""Results: the records a run leaves (records.py), the model registry (registry.py), the
SQLite index (store.py), aggregation with CIs, the verdict tables, trend plots, the HTML
report and live progress. The bottom layer: nothing here imports harness/ or agents/."""
