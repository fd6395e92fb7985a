"""The reviews every authenticated identity may create (bootstrap role system:basic-user), answered for the caller:
SelfSubjectReview (who am I: `kubectl auth whoami`), SelfSubjectAccessReview (may I: `kubectl auth can-i`) and
SelfSubjectRulesReview (what may I: `kubectl auth can-i --list`)."""
from __future__ import annotations

import json
from typing import Any, Callable

from netpol_scan.sandbox.kube_api.cluster import Cluster
from netpol_scan.sandbox.kube_api.errors import ApiError
from netpol_scan.sandbox.kube_api.identity import canonical_arn, session_name
from netpol_scan.sandbox.kube_api.protobuf import PROTOBUF, ProtobufError, review_spec
from netpol_scan.sandbox.kube_api.rbac import Attributes
from netpol_scan.sandbox.kube_api.resources import (
    SELF_SUBJECT_ACCESS_REVIEWS, SELF_SUBJECT_REVIEWS, SELF_SUBJECT_RULES_REVIEWS, ResourceKind,
)

def access_review(cluster: Cluster, user: str, body: bytes, content_type: str) -> dict[str, Any]:
    """A SelfSubjectAccessReview answered for the caller: may I do what spec.resourceAttributes (or
    nonResourceAttributes) says? Every authenticated identity may ask (the bootstrap role system:basic-user)."""
    spec = _spec(body, content_type, SELF_SUBJECT_ACCESS_REVIEWS)
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (resource is None) == (non_resource is None):
        field = "nonResourceAttributes" if resource else "resourceAttributes"
        detail = ("Invalid value: cannot be specified in combination with resourceAttributes" if resource
                  else "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified")
        raise ApiError(422, f'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.{field}: {detail}',
                       details={"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview"})
    if resource is not None:
        request = Attributes(resource.get("verb", ""), True, resource.get("group", ""), resource.get("resource", ""),
                             resource.get("subresource", ""), resource.get("namespace", ""), resource.get("name", ""))
    else:
        request = Attributes(non_resource.get("verb", ""), False, path=non_resource.get("path", ""))
    decision = cluster.decide(user, request)
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.denied:
        status["denied"] = True
    if decision.reason:
        status["reason"] = decision.reason
    return _answer(SELF_SUBJECT_ACCESS_REVIEWS, spec, status)


def rules_review(cluster: Cluster, user: str, body: bytes, content_type: str) -> dict[str, Any]:
    """A SelfSubjectRulesReview: every rule that applies to the caller in spec.namespace."""
    spec = _spec(body, content_type, SELF_SUBJECT_RULES_REVIEWS)
    namespace = spec.get("namespace") or ""
    rules, error = cluster.rules_for(user, namespace)
    documents = [rule.document() for rule in rules]
    status: dict[str, Any] = {
        "resourceRules": [d for d in documents if "nonResourceURLs" not in d],
        "nonResourceRules": [d for d in documents if "nonResourceURLs" in d],
        # an explicit deny (forbid) cannot be listed as a rule: kube-apiserver says the list is incomplete
        "incomplete": bool(error) or cluster.denies_anything()}
    if error:
        status["evaluationError"] = error
    return _answer(SELF_SUBJECT_RULES_REVIEWS, spec, status)


def self_review(cluster: Cluster, user: str, body: bytes, content_type: str) -> dict[str, Any]:
    """A SelfSubjectReview: the caller's user info as the EKS authenticator gives it (ARN as username, the access
    entry's groups, and the ARNs in extra)."""
    _spec(body, content_type, SELF_SUBJECT_REVIEWS, spec_required=False)
    session = session_name(user)
    extra = {"arn": [user], "canonicalArn": [canonical_arn(user)], **({"sessionName": [session]} if session else {})}
    user_info = {"username": user, "groups": cluster.rbac.groups_of(user), "extra": extra}
    return {"kind": SELF_SUBJECT_REVIEWS.kind, "apiVersion": SELF_SUBJECT_REVIEWS.group_version,
            "metadata": {"creationTimestamp": None}, "status": {"userInfo": user_info}}


def _spec(body: bytes, content_type: str, kind: ResourceKind, spec_required: bool = True) -> dict[str, Any]:
    """The review's spec from a JSON or protobuf body; 415 for any other media type, as kube-apiserver answers."""
    media_type = content_type.split(";")[0].strip() or "application/json"
    if media_type == PROTOBUF:
        try:
            return review_spec(body, kind.kind)
        except (ProtobufError, UnicodeDecodeError) as error:
            raise ApiError(400, f"the body is not a protobuf {kind.kind}: {error}") from None
    if media_type != "application/json":
        raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: "
                            f"application/json, application/yaml, {PROTOBUF}")
    try:
        review = json.loads(body or b"null")
        spec = review.get("spec", {} if not spec_required else None)
        if not isinstance(spec, dict):
            raise TypeError
    except (ValueError, TypeError, AttributeError):
        raise ApiError(400, f"the body is not a {kind.kind}{' with a spec' if spec_required else ''}") from None
    return spec


def _answer(kind: ResourceKind, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind.kind, "apiVersion": kind.group_version, "metadata": {"creationTimestamp": None},
            "spec": spec, "status": status}


REVIEW_PATHS: dict[str, Callable[[Cluster, str, bytes, str], dict[str, Any]]] = {
    f"/apis/{kind.group_version}/{kind.plural}": review for kind, review in (
        (SELF_SUBJECT_REVIEWS, self_review), (SELF_SUBJECT_ACCESS_REVIEWS, access_review),
        (SELF_SUBJECT_RULES_REVIEWS, rules_review))}
