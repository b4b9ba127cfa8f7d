#!/usr/bin/env python3
"""Our own policy over the chart's rendered objects (scripts/deploy-check runs it).

Usage: policy_check.py RENDERED.yaml...   (the output of `helm template`)

Every container of every workload must have liveness and readiness probes, resources
(CPU and memory requests, a memory limit) and a locked-down securityContext (non-root,
read-only root filesystem, no privilege escalation, every capability dropped); every
StatefulSet must have a volumeClaimTemplate mounted by its container, and one of a saga
engine's with several replicas SAGA_REPLICAS and ADVERTISED_URL; every workload a
PodDisruptionBudget and a NetworkPolicy selecting its pods; no image may be `:latest` or
untagged. Objects of kinds the Kubernetes schemas do not know (Istio, Strimzi, Prometheus
Operator) get a shape check. Exits 1 naming every violation, 0 when there is none.
"""
import sys

import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
ENGINES = {"reservation", "inventory", "payment"}  # the services that run saga engines
CUSTOM = {
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


def matches(selector, labels):
    """A label selector's matchLabels (all the chart uses) selects these labels."""
    want = (selector or {}).get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def check(objects):
    errors = []
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    workloads = 0
    for o in objects:
        kind, name = o["kind"], o["metadata"]["name"]
        where = f"{kind}/{name}"
        api = o.get("apiVersion", "")
        if "." in api.split("/")[0] and not api.startswith(("apps/", "policy/", "autoscaling/",
                                                           "networking.k8s.io/", "batch/")):
            if (api, kind) not in CUSTOM:
                errors.append(f"{where}: unexpected custom kind {api} {kind}")
            if not isinstance(o.get("spec"), dict) or not o["spec"]:
                errors.append(f"{where}: no spec")
            continue
        if kind not in WORKLOADS:
            continue
        workloads += 1
        pod = o["spec"]["template"]
        labels = pod["metadata"].get("labels") or {}
        pod_spec = pod["spec"]
        pod_sc = pod_spec.get("securityContext") or {}
        if pod_spec.get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: automountServiceAccountToken is not false")
        containers = pod_spec.get("containers") or []
        if not containers:
            errors.append(f"{where}: no containers")
        for c in containers + (pod_spec.get("initContainers") or []):
            cw = f"{where} container {c['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                if c in containers and not c.get(probe):
                    errors.append(f"{cw}: no {probe}")
            res = c.get("resources") or {}
            req = res.get("requests") or {}
            if "cpu" not in req or "memory" not in req:
                errors.append(f"{cw}: resources.requests needs cpu and memory")
            if "memory" not in (res.get("limits") or {}):
                errors.append(f"{cw}: no memory limit")
            sc = c.get("securityContext") or {}
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                errors.append(f"{cw}: runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                errors.append(f"{cw}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{cw}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                errors.append(f"{cw}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                errors.append(f"{cw}: capabilities do not drop ALL")
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1]
            if ":" not in tag or tag.endswith(":latest"):
                errors.append(f"{cw}: image {image!r} has no pinned tag")
        if kind == "StatefulSet":
            claims = [t["metadata"]["name"] for t in o["spec"].get("volumeClaimTemplates") or []]
            if not claims:
                errors.append(f"{where}: no volumeClaimTemplates")
            mounted = {m["name"] for c in containers for m in c.get("volumeMounts") or []}
            for claim in claims:
                if claim not in mounted:
                    errors.append(f"{where}: volumeClaimTemplate {claim} is not mounted")
            # Replicas of an engine share its shards and reach each other (docs/replicas.md).
            component = labels.get("app.kubernetes.io/component", "")
            if (o["spec"].get("replicas") or 1) > 1 and component in ENGINES:
                for c in containers:
                    env = {e.get("name") for e in c.get("env") or []}
                    for needed in ("SAGA_REPLICAS", "ADVERTISED_URL"):
                        if needed not in env:
                            errors.append(f"{where}: {o['spec']['replicas']} replicas without {needed}")
        if not any(matches(p["spec"].get("selector"), labels) for p in pdbs):
            errors.append(f"{where}: no PodDisruptionBudget selects its pods")
        if policies and not any(matches(p["spec"].get("podSelector"), labels) for p in policies):
            errors.append(f"{where}: no NetworkPolicy selects its pods")
    if workloads == 0:
        errors.append("no workloads rendered")
    return errors, workloads


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        with open(path, encoding="utf-8") as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        errors, workloads = check(objects)
        custom = sum(1 for o in objects if (o.get("apiVersion"), o["kind"]) in CUSTOM)
        if errors:
            failed = True
            for e in errors:
                print(f"policy: {path}: {e}", file=sys.stderr)
        else:
            print(f"policy: {path}: {len(objects)} objects, {workloads} workloads: ok "
                  f"({custom} custom-resource objects shape-checked only)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
