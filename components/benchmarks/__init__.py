"""Measurements of the code, not of the model: the Shapley estimators (shapley), one training step phase by phase
(step_profile) and the served model (serving). Each is a `shapca bench ...` command."""
