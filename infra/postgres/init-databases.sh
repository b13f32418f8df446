#!/bin/sh
# Runs once, when the Postgres volume is first initialised: Prefect uses POSTGRES_DB, MLflow gets its own database for
# tracking data and one for its users and grants (the basic-auth app, mlflow/basic_auth.ini).
set -eu
for db in "$MLFLOW_DB_NAME" "$MLFLOW_AUTH_DB_NAME"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --set=dbname="$db" <<'EOSQL'
CREATE DATABASE :"dbname";
EOSQL
done
