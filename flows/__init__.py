"""Prefect flows: orchestration only; each task calls one function of `components`."""
