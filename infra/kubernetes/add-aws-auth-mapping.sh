#!/bin/sh
# Maps the eks-netpol-scanner member role to the Kubernetes group netpol-scanner:readers in the aws-auth ConfigMap
# of a cluster that still authenticates through it (clusters with access entries use infra/eks-access-entry.yaml).
# Apply rbac.yaml first: the group is what its ClusterRoleBinding and RoleBinding grant.
#
#   infra/kubernetes/add-aws-auth-mapping.sh <cluster> <region> <member role ARN>
#
# This is a script, not a manifest, on purpose: `kubectl apply -f infra/kubernetes/` must never replace the
# cluster's aws-auth ConfigMap (that drops the node and admin mappings and locks them out). eksctl adds one entry
# to the existing mapRoles list:
#
#   - rolearn: arn:aws:iam::<account>:role/NetpolScannerRole   # the role ARN, without any IAM path
#     username: netpol-scanner
#     groups:
#       - netpol-scanner:readers
#
# Without eksctl, add that entry by hand with `kubectl -n kube-system edit configmap aws-auth`.
set -eu
if [ "$#" -ne 3 ]; then
    echo "usage: $0 <cluster> <region> <member role ARN (arn:<partition>:iam::<account>:role/<name>)>" >&2
    exit 2
fi
case "$3" in
    arn:aws*:iam::[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]:role/*) ;;
    *) echo "not an IAM role ARN (never an sts assumed-role ARN): $3" >&2; exit 2 ;;
esac
exec eksctl create iamidentitymapping --cluster "$1" --region "$2" --arn "$3" \
    --username netpol-scanner --group netpol-scanner:readers
