#!/bin/sh
# Rendered by Cairn: report this node on the console, from the running system.
. /etc/cairn/node.env
host=$(cat /proc/sys/kernel/hostname)
addr=""
i=0
while [ $i -lt 60 ]; do
  addr=""
  while read -r _ _ family a _; do
    [ "$family" = inet ] && addr="${addr:+$addr,}$a"
  done <<EOF
$(ip -o -4 addr show scope global)
EOF
  if [ "$CAIRN_ADDRESS" = dhcp ]; then
    [ -n "$addr" ] && break
  else
    case ",$addr," in *",$CAIRN_ADDRESS,"*) break ;; esac
  fi
  sleep 1
  i=$((i+1))
done
secrets=absent
[ -s /run/cairn/secrets.env ] && secrets=present
writable=$(cat /etc/cairn/writable 2>/dev/null || echo unknown)
echo "cairn-node: hostname=$host address=${addr:-none} role=$CAIRN_ROLE node=$CAIRN_NODE id=$CAIRN_NODE_ID secrets=$secrets writable=$writable"
for arg in $(cat /proc/cmdline); do
  case "$arg" in cairn.test=poweroff) echo "cairn-node: powering off (cairn.test=poweroff)"; systemctl --no-block poweroff ;; esac
done
exit 0
