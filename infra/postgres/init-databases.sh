#!/bin/sh
# Runs once, when the Postgres volume is first initialised: Prefect uses POSTGRES_DB, MLflow gets its own database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=dbname="$MLFLOW_DB_NAME" <<'EOSQL'
CREATE DATABASE :"dbname";
EOSQL
