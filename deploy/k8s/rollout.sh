#!/usr/bin/env bash
# Deploys one overlay in the order Herald needs: the settings, the service account (and, in prod-clustered,
# the broker and database clusters) and the migration Job first; the Deployments only once the schema is
# at the head the new image expects. Usage: deploy/k8s/rollout.sh deploy/k8s/overlays/prod
set -euo pipefail

overlay=${1:?usage: rollout.sh <overlay directory>}
kubectl=${KUBECTL:-kubectl}
step=herald.io/rollout-step
job=herald-db-upgrade
namespace=$("$kubectl" kustomize "$overlay" | awk '/^  namespace: / { print $2 }' | sort -u)
if [[ -z $namespace || $namespace == *$'\n'* ]]; then
    echo "rollout.sh: the overlay must put everything in one namespace (found: ${namespace:-none})" >&2
    exit 1
fi

# A Job's pod template cannot change, and each release runs the migration again.
"$kubectl" --namespace "$namespace" delete job "$job" --ignore-not-found --wait=true
"$kubectl" apply --kustomize "$overlay" --selector "$step=before-services"
"$kubectl" --namespace "$namespace" wait --for=condition=complete "job/$job" --timeout=960s

"$kubectl" apply --kustomize "$overlay" --selector "$step!=before-services"
"$kubectl" --namespace "$namespace" rollout status deployment \
    --selector app.kubernetes.io/part-of=herald --timeout=600s
