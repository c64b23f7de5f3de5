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
  case "$arg" in
  cairn.test=poweroff)
    # Boot tests: let the join finish, print this boot's journal (the test checks that no
    # secret appears in it), then power off.
    i=0
    while [ $i -lt 120 ]; do
      case "$(systemctl show -p ActiveState --value cairn-kubernetes.service)" in active | failed) break ;; esac
      # Not started because its condition (secrets present) failed: nothing to wait for.
      [ "$(systemctl show -p ConditionTimestampMonotonic --value cairn-kubernetes.service)" != 0 ] &&
        [ "$(systemctl show -p ConditionResult --value cairn-kubernetes.service)" = no ] && break
      sleep 1
      i=$((i+1))
    done
    echo "cairn-kubernetes: $(systemctl show -p ActiveState --value cairn-kubernetes.service) $(systemctl show -p Result --value cairn-kubernetes.service)"
    if [ "$CAIRN_DISTRIBUTION" = k3s ]; then
      # k3s was started, not waited for: let it report ready.
      i=0
      while [ $i -lt 120 ]; do
        case "$(systemctl show -p ActiveState --value k3s.service)" in active | failed) break ;; esac
        sleep 1
        i=$((i+1))
      done
      echo "cairn-k3s: $(systemctl show -p ActiveState --value k3s.service) $(systemctl show -p SubState --value k3s.service)"
    fi
    failed=$(systemctl list-units --failed --plain --no-legend --no-pager | while read -r unit _; do printf '%s ' "$unit"; done)
    echo "cairn-failed-units: ${failed:-none}"
    echo "cairn-journal: begin"
    journalctl -b --no-pager -o short-monotonic | tail -n 4000
    echo "cairn-journal: end"
    echo "cairn-node: powering off (cairn.test=poweroff)"
    systemctl --no-block poweroff
    ;;
  esac
done
exit 0
