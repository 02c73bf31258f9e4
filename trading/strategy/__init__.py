"""NautilusTrader strategy: guardrails, sizing, execution rule, inference seam."""
