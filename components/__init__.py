"""Shap-CA library: data, validation, contexts, model, training, tracking, storage. No orchestration here."""
