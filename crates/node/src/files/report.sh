#!/bin/sh
# Rendered by Cairn: report this node on the console, from the running system.
. /etc/cairn/node.env
host=$(cat /proc/sys/kernel/hostname)
addr=""
i=0
while [ $i -lt 60 ]; do
  # No network interface at all (QEMU's raspi4b models no Ethernet): nothing to wait for.
  nics=0
  for n in /sys/class/net/*; do [ "${n##*/}" = lo ] || nics=$((nics+1)); done
  [ $nics -gt 0 ] || break
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
# Boot tests read the lines below from the console: keep the kernel's messages (drivers
# that udev loads meanwhile) from landing inside them. They stay in the journal.
case " $(cat /proc/cmdline) " in *" cairn.test="*) echo 1 > /proc/sys/kernel/printk ;; esac
writable=$(cat /etc/cairn/writable 2>/dev/null || echo unknown)
echo "cairn-node: hostname=$host address=${addr:-none} role=$CAIRN_ROLE node=$CAIRN_NODE id=$CAIRN_NODE_ID secrets=$secrets writable=$writable"
# What an earlier cairn.test=write boot left (power-cut and re-flash tests).
if [ -f /var/lib/cairn-test/data ]; then
  echo "cairn-test: kept $(head -n 1 /var/lib/cairn-test/data) sha256=$(sha256sum < /var/lib/cairn-test/data | cut -d' ' -f1)"
fi
for arg in $(cat /proc/cmdline); do
  case "$arg" in
  cairn.test=write)
    # Power-cut tests: write to the data partition until QEMU is killed. Each round
    # rewrites some scratch files, then replaces `data` (its round number and random
    # bytes) by a synced rename, and says so: after the cut, `data` must be the last synced
    # round's or the one it was being replaced with, whole.
    mkdir -p /var/lib/cairn-test
    echo "cairn-test: writing"
    n=0
    while :; do
      n=$((n+1))
      for f in 1 2 3 4; do head -c 262144 /dev/urandom > "/var/lib/cairn-test/scratch$f"; done
      { echo "round=$n"; head -c 49152 /dev/urandom | base64; } > /var/lib/cairn-test/data.new
      sync
      echo "cairn-test: replacing with round=$n sha256=$(sha256sum < /var/lib/cairn-test/data.new | cut -d' ' -f1)"
      mv /var/lib/cairn-test/data.new /var/lib/cairn-test/data
      sync
      echo "cairn-test: synced round=$n sha256=$(sha256sum < /var/lib/cairn-test/data | cut -d' ' -f1)"
    done
    ;;
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
    # What udev loaded for the hardware it found, once its queue is empty: a boot test
    # checks drivers by name here, not by when their probe message reached the console.
    udevadm settle --timeout=120 || echo "cairn: warning: udev's queue did not empty in 120 s"
    modules=$(while read -r m _; do printf '%s ' "$m"; done < /proc/modules)
    echo "cairn-modules: ${modules:-none}"
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
