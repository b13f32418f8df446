"""Access control of the production topology: who may do what (README "Production", roles).

- mlflow_access.py: the MLflow roles (basic-auth app) and the idempotent provisioning of users, grants, experiments
  and registered models (`python -m flows.provision_mlflow`);
- prefect_gateway.py: the role-aware gateway in front of the Prefect API (a standalone file: it runs next to the
  Prefect server, where this project is not installed).

S3 is the object store's business: infra/minio/policies/ holds one policy per role, which the MinIO bootstrap and the
tests' moto server both load.
"""
