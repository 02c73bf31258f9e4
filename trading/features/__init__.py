"""FEATURES_V1 (ticks) and BARS_V1 (1-minute bars): one definition, batch and online."""
