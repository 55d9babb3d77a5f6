"""Per-user behavioural features (definitions and units: FEATURES.md in this folder)."""
