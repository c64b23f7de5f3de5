#!/bin/sh
# Rendered by Cairn: say where this node's secrets came from, or why there are none. The
# initramfs placed them in /run/cairn (a tmpfs, never on disk) before systemd started: from
# the boot partition's reserved cairn-secrets.env (SD) or the cairn.secrets= URL (PXE),
# where the boot device and the network were already known, so nothing here depends on
# udev or network timing.
if [ -s /run/cairn/secrets.env ]; then
  chmod 0600 /run/cairn/secrets.env
  echo "cairn: secrets present, from $(cat /run/cairn/secrets.source 2>/dev/null || echo 'the initramfs')"
  exit 0
fi
reason=$(cat /run/cairn/secrets.absent 2>/dev/null || echo "the initramfs placed none")
echo "cairn: secrets are absent: $reason; the node will not join the cluster until they are there (then reboot)."
exit 0
