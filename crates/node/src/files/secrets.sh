#!/bin/sh
# Rendered by Cairn: place this node's secrets in /run/cairn, never on disk.
. /etc/cairn/node.env
mkdir -p /run/cairn
chmod 0700 /run/cairn
src="$CAIRN_SECRETS"
url=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in cairn.secrets=*) url="${arg#cairn.secrets=}" ;; esac
done
if [ -n "$url" ]; then
  if busybox wget -q -O /run/cairn/secrets.env "$url"; then
    chmod 0600 /run/cairn/secrets.env
    echo "cairn: secrets fetched from the PXE server"
    exit 0
  fi
  rm -f /run/cairn/secrets.env
  echo "cairn: secrets are absent: $url could not be fetched; the node will not join the cluster. Serve them with the PXE server for this MAC, then reboot."
  exit 0
fi
if [ -n "$src" ] && [ -s "$src" ]; then
  install -m 0600 "$src" /run/cairn/secrets.env
  echo "cairn: secrets read from $src"
  exit 0
fi
if [ -n "$src" ]; then
  echo "cairn: secrets are absent: $src does not exist; the node will not join the cluster. Write the secrets file when flashing the card, then reboot."
else
  echo "cairn: secrets are absent: no cairn.secrets= URL on the kernel command line; the node will not join the cluster. Serve them with the PXE server for this MAC, then reboot."
fi
exit 0
