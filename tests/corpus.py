"""The real-world policy corpus (tests/data/policies, from ../shared/policies): where each file is evaluated, and its
classification."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import yaml

from handler.errors import PolicyError
from handler.models import Namespace, NetworkPolicy
from handler.policy import Reach, analyze

# A copy of ../shared/policies (upstream manifests, their sources and licences in its README), so that the tests
# run in a clone anywhere; tests/unit/test_corpus_copy.py keeps it equal to ../shared/policies where that exists.
CORPUS = pathlib.Path(__file__).resolve().parent / "data" / "policies"
SHARED_CORPUS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "policies"
CLUSTER_SCOPED = {"CiliumClusterwideNetworkPolicy", "GlobalNetworkPolicy", "AdminNetworkPolicy",
                  "BaselineAdminNetworkPolicy"}
DEFAULT_NAMESPACE = "corpus"  # for manifests that omit metadata.namespace
# Cluster-scoped manifests are evaluated against the namespace they are written for.
TARGET = {"network-policy-api/01-anp-cluster-wide-deny-example.yaml": "sensitive-ns",
          "network-policy-api/05-anp-allow-80-demo-namespace.yaml": "demo",
          "network-policy-api/06-anp-pass-81-demo-namespace.yaml": "demo",
          "network-policy-api/07-anp-deny-81-demo-namespace.yaml": "demo",
          "network-policy-api/08-banp-baseline-deny-demo-namespace.yaml": "demo",
          "calico/09-gnp-restrict-development-access.yaml": "development",
          "cilium/24-ccnp-wildcard-from-endpoints-kube-dns.yaml": "kube-system"}
NAMESPACE_LABELS = {"development": {"environment": "development", "development": "true"}}


@dataclass(frozen=True)
class Manifest:
    file: str  # "<source>/<file>"
    document: dict[str, Any]

    @property
    def namespace(self) -> str:
        if self.document["kind"] in CLUSTER_SCOPED:
            return TARGET.get(self.file, DEFAULT_NAMESPACE)
        return self.document["metadata"].get("namespace") or DEFAULT_NAMESPACE

    @property
    def policy(self) -> NetworkPolicy:
        d = self.document
        spec = dict(d.get("spec") or {})
        if d.get("specs"):
            spec["specs"] = d["specs"]
        return NetworkPolicy("" if d["kind"] in CLUSTER_SCOPED else self.namespace, d["metadata"]["name"], spec,
                             d["kind"], d["apiVersion"])


def manifests() -> list[Manifest]:
    """Every manifest of the corpus; an error when there is none, since the tests over it would pass on nothing."""
    files = sorted(CORPUS.glob("*/*.yaml"))
    if not files:
        raise FileNotFoundError(f"the policy corpus is missing: no {CORPUS}/*/*.yaml")
    return [Manifest(str(p.relative_to(CORPUS)), yaml.safe_load(p.read_text())) for p in files]


def namespace_for(name: str) -> Namespace:
    return Namespace(name, labels=NAMESPACE_LABELS.get(name, {}))


def classify(policy: NetworkPolicy, namespace: Namespace) -> tuple[str, ...]:
    """(counts for 5.3.2, default-deny ingress, default-deny egress, allow-all rules) as the docs table says;
    "unknown" for a direction whose rules could not be interpreted, "rejected" for a policy not at all."""
    try:
        effect = analyze(policy, namespace)
    except PolicyError:
        return ("rejected",) * 4
    assert effect is not None
    deny = ["unknown" if d.unknown else "yes" if d.reach is Reach.ALL and d.isolates and not d.admits_everything
            else "no" for d in (effect.ingress, effect.egress)]
    opens = "+".join(name for name, d in (("in", effect.ingress), ("out", effect.egress)) if d.open_rules) or "-"
    return ("yes" if effect.counts else "no", *deny, opens)
