"""Regime model: HMM + policy head, model selection, stable labels, drift, online filter,
MLflow packaging and registry operations. Heavy imports (hmmlearn, sklearn, mlflow) stay
inside the modules that need them."""
