"""One training as an MLflow run (training_run, launch under torchrun, run_dir), its registration
(registration) and the scoring of any logged model (model_evaluation). Above training/ and tracking/; below
experiments/ and flows/."""
