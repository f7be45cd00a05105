#!/usr/bin/env bash
# The closed loop end to end on a kind cluster: cert-manager, Knative Serving (Kourier) and Eventing,
# KServe (Knative mode), Kubeflow Pipelines standalone with its SeaweedFS object store, a minimal
# Prometheus, the kfloop image built here and loaded into kind, hack/e2e-kind (manifests/overlays/
# auto-rollout in namespace kubeflow); then it trains and deploys v1, sends traffic, injects the demo's
# data drift and waits for: drift event -> KFP run -> new version -> analysed canary -> promoted.
#
#   hack/e2e-kind.sh              run it (needs docker, kind, kubectl; about 30-40 minutes)
#   hack/e2e-kind.sh --dry-run    print the plan, every command, and run nothing
#   hack/e2e-kind.sh --keep       leave the cluster up at the end (default: delete it when it passed)
#   hack/e2e-kind.sh --help
#
# Each step prints `==> [N/M] step`; a wait that times out fails with `e2e failed at step N: ...`.
# Every version it installs is pinned in the block below (override any of them from the environment).
set -euo pipefail

# ------------------------------------------------------------------------------- pinned versions
KIND_VERSION=${KIND_VERSION:-v0.30.0}                 # checked against `kind version`
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.34.0}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.17.0}
KNATIVE_SERVING_VERSION=${KNATIVE_SERVING_VERSION:-knative-v1.21.1}
KNATIVE_KOURIER_VERSION=${KNATIVE_KOURIER_VERSION:-knative-v1.21.0}
KNATIVE_EVENTING_VERSION=${KNATIVE_EVENTING_VERSION:-knative-v1.22.0}
KSERVE_VERSION=${KSERVE_VERSION:-v0.20.0}
KFP_VERSION=${KFP_VERSION:-2.17.0}
PROMETHEUS_OPERATOR_VERSION=${PROMETHEUS_OPERATOR_VERSION:-v0.89.0}
# ------------------------------------------------------------------------------- settings
CLUSTER=${E2E_CLUSTER:-kfloop-e2e}
NS=kubeflow                                           # KFP standalone's namespace; hack/e2e-kind sets it
IMAGE=ghcr.io/kfloop/kfloop:0.1.0                     # the name every component and manifest pulls
MODEL=churn
TIMEOUT=${E2E_STEP_TIMEOUT:-900}                      # seconds each wait may take
KFP_PORT=${E2E_KFP_PORT:-18888}
S3_PORT=${E2E_S3_PORT:-19000}
INGRESS_PORT=${E2E_INGRESS_PORT:-18081}
TRIGGER_PORT=${E2E_TRIGGER_PORT:-18080}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${E2E_PYTHON:-$ROOT/.venv/bin/python}
KFLOOP=${E2E_KFLOOP:-$ROOT/.venv/bin/kfloop}
DRY_RUN=0
KEEP=0
STEP=0
STEPS=18
PIDS=()

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "error: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

# ------------------------------------------------------------------------------- helpers
step() {
  STEP=$((STEP + 1))
  echo "==> [$STEP/$STEPS] $*"
}

# run CMD...: print it; run it unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# wait_for WHAT CHECK...: poll CHECK every 10 s until it succeeds or TIMEOUT passes, then fail naming
# the step that did not happen.
wait_for() {
  local what=$1
  shift
  echo "  wait: $what (up to ${TIMEOUT}s; check: $*)"
  [ "$DRY_RUN" = 1 ] && return 0
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "e2e failed at step $STEP: $what did not happen within ${TIMEOUT}s" >&2
      diagnostics
      exit 1
    fi
    sleep 10
  done
  echo "  done: $what"
}

# forward SVC LOCAL:REMOTE NAMESPACE: a background port-forward, stopped on exit.
forward() {
  if [ "$DRY_RUN" = 1 ]; then
    run kubectl port-forward -n "$3" "svc/$1" "$2"
    return 0
  fi
  run kubectl port-forward -n "$3" "svc/$1" "$2" >/dev/null &
  PIDS+=($!)
  sleep 3
}

cleanup() {
  local pid
  # Only what this script started in the background: each subshell and its children.
  for pid in "${PIDS[@]}"; do
    kill $(pgrep -P "$pid") "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

diagnostics() {
  kubectl get inferenceservice,pods -n "$NS" -o wide || true
  kubectl logs -n "$NS" deploy/kfloop-trigger --tail=100 || true
}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is not on the PATH ($2)" >&2; exit 2; }
}

# Checks the waits poll (each exits 0 once its step happened).
trigger_metric() { # NAME_PATTERN: the sum of the trigger's matching samples is > 0
  curl -fsS "http://127.0.0.1:$TRIGGER_PORT/metrics" \
    | awk -v pat="$1" '$0 !~ /^#/ && $1 ~ pat { s += $2 } END { exit !(s > 0) }'
}
registry_has() { # VERSION [STAGE]
  "$KFLOOP" registry list --model "$MODEL" --json | "$PYTHON" -c '
import json, sys
want, stage = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
ok = any(r["version"] == want and (stage is None or r["stage"] == stage) for r in json.load(sys.stdin))
sys.exit(0 if ok else 1)' "$@"
}
isvc_annotation_is() { # KEY VALUE
  local key=${1//./\\.}
  [ "$(kubectl get inferenceservice "$MODEL" -n "$NS" -o jsonpath="{.metadata.annotations.$key}")" = "$2" ]
}
canary_serving() { # VERSION: the InferenceService splits traffic with VERSION as its canary
  isvc_annotation_is kfloop.io/canary-version "$1" \
    && [ -n "$(kubectl get inferenceservice "$MODEL" -n "$NS" -o jsonpath='{.spec.predictor.canaryTrafficPercent}')" ]
}
promoted() { # VERSION: production in the registry, all traffic on it
  registry_has "$1" production && isvc_annotation_is kfloop.io/model-version "$1" \
    && [ -z "$(kubectl get inferenceservice "$MODEL" -n "$NS" -o jsonpath='{.spec.predictor.canaryTrafficPercent}')" ]
}
isvc_host() {
  kubectl get inferenceservice "$MODEL" -n "$NS" -o jsonpath='{.status.url}' | sed -e 's|^[a-z]*://||' -e 's|/.*||'
}
traffic() { # SECONDS AGE_SHIFT
  run "$PYTHON" "$ROOT/hack/e2e_traffic.py" --url "http://127.0.0.1:$INGRESS_PORT" --host "${HOST:-<isvc host>}" \
    --model "$MODEL" --seconds "$1" --age-shift "$2"
}

echo "kfloop e2e on kind: cluster $CLUSTER, namespace $NS, image $IMAGE$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"
echo "versions: kind $KIND_VERSION ($KIND_NODE_IMAGE), cert-manager $CERT_MANAGER_VERSION," \
  "Knative Serving $KNATIVE_SERVING_VERSION, Kourier $KNATIVE_KOURIER_VERSION," \
  "Knative Eventing $KNATIVE_EVENTING_VERSION, KServe $KSERVE_VERSION, Kubeflow Pipelines $KFP_VERSION," \
  "Prometheus Operator $PROMETHEUS_OPERATOR_VERSION"

if [ "$DRY_RUN" = 0 ]; then
  need docker "https://docs.docker.com/get-docker/"
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation, $KIND_VERSION"
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  need curl "apt-get install curl"
  [ -x "$KFLOOP" ] || { echo "error: $KFLOOP not found: python3 -m venv .venv && .venv/bin/pip install -e ." >&2; exit 2; }
  kind version | grep -q "$KIND_VERSION" || echo "warning: kind is not $KIND_VERSION: $(kind version)" >&2
fi

# ------------------------------------------------------------------------------- cluster
step "create the kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
run kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s

step "install cert-manager $CERT_MANAGER_VERSION"
run kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
run kubectl wait --for=condition=Available deployment --all -n cert-manager --timeout=300s

step "install Knative Serving $KNATIVE_SERVING_VERSION with Kourier $KNATIVE_KOURIER_VERSION"
run kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION/serving-crds.yaml"
run kubectl wait --for=condition=Established crd --all --timeout=120s
run kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION/serving-core.yaml"
run kubectl apply -f "https://github.com/knative-extensions/net-kourier/releases/download/$KNATIVE_KOURIER_VERSION/kourier.yaml"
run kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
run kubectl patch configmap/config-domain -n knative-serving --type merge -p '{"data":{"example.com":""}}'
# The image is loaded into the node, not pulled: Knative must not resolve its tag in the registry.
run kubectl patch configmap/config-deployment -n knative-serving --type merge \
  -p '{"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local,ghcr.io"}}'
# Knative 1.19+: queue-proxy serves its OpenTelemetry metrics for Prometheus to scrape.
run kubectl patch configmap/config-observability -n knative-serving --type merge \
  -p '{"data":{"metrics-protocol":"prometheus"}}'
run kubectl wait --for=condition=Available deployment --all -n knative-serving --timeout=300s
run kubectl wait --for=condition=Available deployment --all -n kourier-system --timeout=300s

step "install Knative Eventing $KNATIVE_EVENTING_VERSION (in-memory channel, MT channel broker)"
run kubectl apply -f "https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION/eventing-crds.yaml"
run kubectl wait --for=condition=Established crd --all --timeout=120s
run kubectl apply -f "https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION/eventing-core.yaml"
run kubectl apply -f "https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION/in-memory-channel.yaml"
run kubectl apply -f "https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION/mt-channel-broker.yaml"
run kubectl wait --for=condition=Available deployment --all -n knative-eventing --timeout=300s

step "install KServe $KSERVE_VERSION (Knative mode, Kourier: no Istio virtual host)"
run kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
run kubectl wait --for=condition=Available deployment/kserve-controller-manager -n kserve --timeout=300s
run kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
if [ "$DRY_RUN" = 0 ]; then
  ingress=$(kubectl get configmap inferenceservice-config -n kserve -o jsonpath='{.data.ingress}' \
    | "$PYTHON" -c 'import json, sys; c = json.load(sys.stdin); c["disableIstioVirtualHost"] = True; print(json.dumps({"data": {"ingress": json.dumps(c)}}))')
else
  ingress='{"data": {"ingress": "<the ingress config with \"disableIstioVirtualHost\": true>"}}'
fi
run kubectl patch configmap/inferenceservice-config -n kserve --type merge -p "$ingress"

step "install Kubeflow Pipelines $KFP_VERSION standalone (platform-agnostic: SeaweedFS object store)"
run kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
run kubectl wait --for=condition=Established crd/applications.app.k8s.io --timeout=120s
run kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"
run kubectl wait --for=condition=Available deployment --all -n "$NS" --timeout=900s

step "install Prometheus Operator $PROMETHEUS_OPERATOR_VERSION and a Prometheus for the canary analysis"
run kubectl apply --server-side -f "https://github.com/prometheus-operator/prometheus-operator/releases/download/$PROMETHEUS_OPERATOR_VERSION/bundle.yaml"
run kubectl wait --for=condition=Available deployment/prometheus-operator -n default --timeout=300s
run kubectl wait --for=condition=Established crd/prometheuses.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com --timeout=120s
run kubectl apply -f "$ROOT/hack/e2e-kind/prometheus.yaml"

# ------------------------------------------------------------------------------- kfloop
step "build the image $IMAGE from components/Dockerfile and load it into kind"
run docker build -f "$ROOT/components/Dockerfile" -t "$IMAGE" "$ROOT"
run kind load docker-image "$IMAGE" --name "$CLUSTER"

step "create the S3 Secret kfloop-s3 (keys of KFP's mlpipeline-minio-artifact) and the bucket kfloop"
if [ "$DRY_RUN" = 0 ]; then
  KFLOOP_S3_ACCESS_KEY=$(kubectl get secret mlpipeline-minio-artifact -n "$NS" -o jsonpath='{.data.accesskey}' | base64 -d)
  KFLOOP_S3_SECRET_KEY=$(kubectl get secret mlpipeline-minio-artifact -n "$NS" -o jsonpath='{.data.secretkey}' | base64 -d)
  export KFLOOP_S3_ACCESS_KEY KFLOOP_S3_SECRET_KEY
fi
echo "+ kubectl create secret generic kfloop-s3 -n $NS --from-literal=AWS_ACCESS_KEY_ID=*** --from-literal=AWS_SECRET_ACCESS_KEY=***"
if [ "$DRY_RUN" = 0 ]; then
  kubectl create secret generic kfloop-s3 -n "$NS" \
    --from-literal=AWS_ACCESS_KEY_ID="$KFLOOP_S3_ACCESS_KEY" --from-literal=AWS_SECRET_ACCESS_KEY="$KFLOOP_S3_SECRET_KEY"
fi
run kubectl annotate secret kfloop-s3 -n "$NS" --overwrite \
  serving.kserve.io/s3-endpoint=minio-service.kubeflow.svc.cluster.local:9000 \
  serving.kserve.io/s3-usehttps=0 serving.kserve.io/s3-region=us-east-1
forward minio-service "$S3_PORT:9000" "$NS"
export KFLOOP_S3_ENDPOINT=127.0.0.1:$S3_PORT KFLOOP_S3_BUCKET=kfloop KFLOOP_S3_SECURE=false KFLOOP_S3_REGION=us-east-1
run "$PYTHON" -c '
import os
from minio import Minio
c = Minio(os.environ["KFLOOP_S3_ENDPOINT"], os.environ["KFLOOP_S3_ACCESS_KEY"], os.environ["KFLOOP_S3_SECRET_KEY"], secure=False)
c.bucket_exists("kfloop") or c.make_bucket("kfloop")'

step "apply hack/e2e-kind (manifests/overlays/auto-rollout in namespace $NS)"
run kubectl apply -k "$ROOT/hack/e2e-kind"
run kubectl rollout status deployment/kfloop-trigger -n "$NS" --timeout=300s
wait_for "the Broker kfloop is ready" kubectl wait --for=condition=Ready broker/kfloop -n "$NS" --timeout=10s

step "train and deploy v1: kfloop pipeline submit --wait (deploy_target=kubernetes)"
forward ml-pipeline "$KFP_PORT:8888" "$NS"
run "$KFLOOP" pipeline submit --host "http://127.0.0.1:$KFP_PORT" --experiment kfloop --wait --timeout "$TIMEOUT" \
  --data sample:churn --param deploy_target=kubernetes --param namespace="$NS"
wait_for "v1 registered and production" registry_has 1 production
wait_for "the InferenceService $MODEL is ready" kubectl wait --for=condition=Ready "inferenceservice/$MODEL" -n "$NS" --timeout=10s

step "send traffic: customers of sample:churn"
forward kourier "$INGRESS_PORT:80" kourier-system
forward kfloop-trigger "$TRIGGER_PORT:80" "$NS"
[ "$DRY_RUN" = 1 ] || HOST=$(isvc_host)
traffic 60 0

step "inject data drift: rows of sample:churn?age_shift=15 (customers 15 years older), until the end"
# In the background for the rest of the run: the drift windows, then the canary analysis's traffic
# (Prometheus needs requests on both revisions).
if [ "$DRY_RUN" = 0 ]; then
  traffic $((TIMEOUT * 5)) 15 &
  PIDS+=($!)
else
  traffic $((TIMEOUT * 5)) 15
fi

step "drift event: the trigger received io.kfloop.drift.detected"
wait_for "a drift event reached the trigger" trigger_metric '^kfloop_trigger_events_total\{.*drift'

step "KFP run: the trigger started a retraining run"
wait_for "a retraining run started" trigger_metric '^kfloop_trigger_runs_started_total'

step "new version: the retraining run registered v2"
wait_for "v2 registered" registry_has 2

step "analysed canary: v2 serves a share of the traffic and is compared with v1"
wait_for "v2 serving as a canary" canary_serving 2

step "promoted: v2 is production and takes all the traffic"
wait_for "v2 promoted" promoted 2
[ "$DRY_RUN" = 1 ] || "$KFLOOP" registry list --model "$MODEL"

echo "e2e passed: drift event -> KFP run -> v2 -> analysed canary -> promoted"
if [ "$KEEP" = 0 ]; then
  run kind delete cluster --name "$CLUSTER"
else
  echo "cluster $CLUSTER kept: kind delete cluster --name $CLUSTER"
fi
