"""The project's Kubernetes API test server: the part of kube-apiserver that a NetworkPolicy scanner reads.

It serves one in-memory `Cluster` over TLS with its own CA and answers the way kube-apiserver does wherever a
scanner depends on it: EKS bearer-token authentication (checked first, 401 Status), discovery, lists with
limit/continue paging (continue tokens that expire with 410 like after etcd compaction), label and field
selectors, metadata-only and Table views, single-object GETs, RBAC per kind and verb (roles and bindings loaded
from YAML documents, 403 with kube-apiserver's message, SelfSubjectAccessReview) and faults on demand
(throttling, server errors, delays). Every request is recorded with the caller's identity.

One module per responsibility: token (EKS token verification), errors (Status answers), resources and store
(kinds, objects, paging), selectors, faults, rbac and request_info (authorization), cluster (one cluster's
state), views and routes (HTTP answers), server (TLS). Import the public names from here.
"""
from netpol_scan.sandbox.kube_api.cluster import Cluster
from netpol_scan.sandbox.kube_api.errors import EXPIRED_CONTINUE_MESSAGE, STATUS_REASONS, ApiError
from netpol_scan.sandbox.kube_api.faults import Fault
from netpol_scan.sandbox.kube_api.rbac import AUTHENTICATED, Attributes, Decision, PolicyRule, Rbac, RbacError
from netpol_scan.sandbox.kube_api.resources import (
    NAMESPACES, NETWORK_POLICIES, SELF_SUBJECT_ACCESS_REVIEWS, ResourceKind,
)
from netpol_scan.sandbox.kube_api.selectors import field_matcher, label_matcher
from netpol_scan.sandbox.kube_api.server import KubeApiServer, TlsMaterial, generate_tls
from netpol_scan.sandbox.kube_api.store import Page
from netpol_scan.sandbox.kube_api.token import EksTokenVerifier, SecretLookup, Verdict, presigned_token
from netpol_scan.sandbox.kube_api.views import negotiate

__all__ = [
    "AUTHENTICATED", "EXPIRED_CONTINUE_MESSAGE", "NAMESPACES", "NETWORK_POLICIES", "SELF_SUBJECT_ACCESS_REVIEWS",
    "STATUS_REASONS", "ApiError", "Attributes", "Cluster", "Decision", "EksTokenVerifier", "Fault", "KubeApiServer",
    "Page", "PolicyRule", "Rbac", "RbacError", "ResourceKind", "SecretLookup", "TlsMaterial", "Verdict",
    "field_matcher", "generate_tls", "label_matcher", "negotiate", "presigned_token",
]
