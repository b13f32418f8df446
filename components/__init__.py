"""Shap-CA library: data, validation, contexts, model, training, tracking. No orchestration here."""
