#!/bin/sh
# Rendered by Cairn: bring the node into the cluster with the secrets from /run/cairn.
set -eu
. /etc/cairn/node.env
set -a
. /run/cairn/secrets.env
set +a
case "$CAIRN_DISTRIBUTION" in
kubeadm)
  : "${join_token:?the secrets file has no join_token}"
  # awk, not sed: the node's image carries mawk and no sed. The values go through the
  # environment, so they never appear on a command line.
  umask 077
  CAIRN_T="$join_token" CAIRN_H="${ca_cert_hash:-}" awk '{
    gsub(/@CAIRN_JOIN_TOKEN@/, ENVIRON["CAIRN_T"]); gsub(/@CAIRN_CA_CERT_HASH@/, ENVIRON["CAIRN_H"]); print
  }' /etc/cairn/kubeadm.yaml > /run/cairn/kubeadm.yaml
  systemctl enable --now kubelet.service || true
  if [ "$CAIRN_ROLE" = control-plane ] && [ ! -e /etc/kubernetes/admin.conf ]; then
    exec kubeadm init --config /run/cairn/kubeadm.yaml
  fi
  [ -e /etc/kubernetes/kubelet.conf ] || exec kubeadm join --config /run/cairn/kubeadm.yaml
  ;;
k3s)
  : "${join_token:?the secrets file has no join_token}"
  umask 077
  printf '%s\n' "$join_token" > /run/cairn/k3s-token
  # k3s is the node's daemon (server or agent, with its own containerd): it runs on every
  # boot and re-registers with the state it keeps under /var/lib/rancher/k3s. Not waited
  # for: an agent is ready only once it reaches a server.
  exec systemctl start --no-block k3s.service
  ;;
esac
