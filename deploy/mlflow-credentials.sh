#!/usr/bin/env bash
# Once, before `ray up cluster.yaml`: credentials for the cluster's MLflow server (basic auth).
# Writes ~/.semisep/mlflow.env (mode 600), which cluster.yaml ships to every node and sources before
# starting Ray and the MLflow server: the server creates its admin from MLFLOW_AUTH_ADMIN_*, and
# semisep (drivers and Ray workers) authenticates with MLFLOW_TRACKING_USERNAME / _PASSWORD.
set -euo pipefail
out="${1:-$HOME/.semisep/mlflow.env}"
if [ -e "$out" ]; then echo "$out exists; remove it first to rotate the credentials" >&2; exit 1; fi
mkdir -p "$(dirname "$out")"
umask 077
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
cat > "$out" <<ENV
MLFLOW_TRACKING_USERNAME=semisep
MLFLOW_TRACKING_PASSWORD=$password
MLFLOW_AUTH_ADMIN_USERNAME=semisep
MLFLOW_AUTH_ADMIN_PASSWORD=$password
MLFLOW_FLASK_SERVER_SECRET_KEY=$secret
ENV
echo "wrote $out (keep it secret; semisep reads MLFLOW_TRACKING_USERNAME/PASSWORD from the environment)"
