#!/bin/busybox sh
# Cairn's init: find the root squashfs (a device, a partition by PARTUUID or LABEL, or an
# HTTP URL), mount it read-only under a writable overlay, lay the node's own files (from
# the node's cpio, appended to this initramfs) on top, place the node's secrets in
# /run/cairn, and switch to systemd.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /lower /upper /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
/bin/busybox --install -s /bin
# Modules the kernel asks for itself (request_module) come from here too.
echo /bin/modprobe > /proc/sys/kernel/modprobe
fail() { echo "cairn: $*" >/dev/console; sleep 1; poweroff -f; }
for m in $(cat /etc/cairn/modules); do modprobe "$m" 2>/dev/null || echo "cairn: module $m not loaded"; done
root=""
root_sha256=""
secrets_url=""
data_start=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    cairn.root=*) root="${arg#cairn.root=}" ;;
    cairn.root.sha256=*) root_sha256="${arg#cairn.root.sha256=}" ;;
    cairn.secrets=*) secrets_url="${arg#cairn.secrets=}" ;;
    cairn.data.start=*) data_start="${arg#cairn.data.start=}" ;;
  esac
done
case "$data_start" in
  *[!0-9]*)
    echo "cairn: cairn.data.start=$data_start is not a sector number: ignoring it"
    data_start=""
    ;;
esac
[ -n "$root" ] || root="LABEL=cairn-root"
echo "cairn: root $root"
writable=tmpfs
le32() { v=$1; n=0; while [ $n -lt 4 ]; do printf "\\$(printf %03o $((v % 256)))"; v=$((v / 256)); n=$((n+1)); done; }
# The data partition: number 3 on the root's disk, journaled ext4. On first boot it is
# created from the sector cairn.data.start= names (the end of the root's slot, the same for
# every image of the node) over the rest of the disk, and formatted; a filesystem found
# there (partition 3 in the table, or left by an earlier flash of the node) is checked with
# e2fsck and kept, never formatted. Without one, the writable layer is a tmpfs.
data_check() {
  out=$(/usr/sbin/e2fsck -p "$1" 2>&1)
  rc=$?
  [ -n "$out" ] && echo "$out" | sed 's/^/cairn: e2fsck: /'
  if [ $rc -ge 4 ]; then
    echo "cairn: e2fsck -p cannot repair $1 unattended (exit $rc); running e2fsck -y"
    out=$(/usr/sbin/e2fsck -y "$1" 2>&1)
    rc=$?
    echo "$out" | tail -n 40 | sed 's/^/cairn: e2fsck: /'
  fi
  case $rc in
    0) echo "cairn: checked the data partition $1: clean" ;;
    1 | 2 | 3) echo "cairn: checked the data partition $1: repaired (e2fsck exit $rc)" ;;
    *)
      echo "cairn: the data partition $1 has errors e2fsck could not repair (exit $rc): not mounting it, the writable layer is a tmpfs; its data is still on the card"
      return 1
      ;;
  esac
}
# Partition 3's MBR type byte (at 446 + 2 * 16 + 4): 83 once its filesystem is made, da
# ("non-FS data") while it is being made, so a first boot cut off there starts over.
p3_type() { od -An -tx1 -j482 -N1 "/dev/$1" 2>/dev/null | tr -d ' '; }
set_p3_type() { printf "\\$2" | dd of="/dev/$1" bs=1 seek=482 count=1 conv=notrunc,fsync 2>/dev/null; }
find_p3() {
  p3=""
  for p in /sys/class/block/$1/$1*; do
    [ "$(cat "$p/partition" 2>/dev/null)" = 3 ] && p3="/dev/${p##*/}"
  done
}
data_partition() {
  part="${1##*/}"
  sys=$(readlink -f "/sys/class/block/$part")
  [ -e "$sys/partition" ] || return 1
  disk=$(basename "$(dirname "$sys")")
  find_p3 "$disk"
  state=existing
  fresh=""
  if [ -n "$p3" ] && [ "$(p3_type "$disk")" = da ]; then
    echo "cairn: the data partition $p3 was never finished (the power went while it was made): making it again"
    fresh=yes
  fi
  if [ -z "$p3" ]; then
    end=$(( $(cat "$sys/start") + $(cat "$sys/size") ))
    start=${data_start:-$(( (end + 2047) / 2048 * 2048 ))}
    if [ "$start" -lt "$end" ]; then
      echo "cairn: cairn.data.start=$start is inside the root partition (which ends at sector $end): no data partition"
      return 1
    fi
    size=$(( $(cat "/sys/class/block/$disk/size") - start ))
    if [ $size -lt 131072 ]; then
      echo "cairn: /dev/$disk has no 64 MiB past sector $start for the data partition: use a larger card"
      return 1
    fi
    # An MBR counts sectors in 32 bits (2 TiB).
    [ $size -le 4294967295 ] || size=4294967295
    { printf '\000\376\377\377\332\376\377\377'; le32 $start; le32 $size; } |
      dd of="/dev/$disk" bs=1 seek=478 count=16 conv=notrunc,fsync 2>/dev/null || return 1
    blockdev --rereadpt "/dev/$disk" 2>/dev/null || partprobe "/dev/$disk" 2>/dev/null
    n=0
    while [ -z "$p3" ] && [ $n -lt 50 ]; do
      find_p3 "$disk"
      [ -n "$p3" ] || sleep 0.1
      n=$((n+1))
    done
    [ -n "$p3" ] && [ -b "$p3" ] || return 1
    # A card flashed again over an older one still holds the data filesystem here.
    magic=$(od -An -tx2 -j1080 -N2 "$p3" 2>/dev/null | tr -d ' ')
    label=$(dd if="$p3" bs=1 skip=1144 count=10 2>/dev/null)
    if [ "$magic" = ef53 ] && [ "$label" = cairn-data ]; then
      echo "cairn: found the data filesystem of an earlier flash on $p3; keeping it"
      set_p3_type "$disk" 203
    else
      fresh=yes
    fi
  fi
  if [ -n "$fresh" ]; then
    echo "cairn: first boot: creating the data partition $p3 ($(( $(cat "/sys/class/block/${p3##*/}/size") / 2048 )) MiB, ext4)"
    # No discard: an SD card may take minutes to erase a whole partition (the blocks are
    # unused anyway), and first boot waits for it.
    /usr/sbin/mke2fs -q -F -t ext4 -L cairn-data -m 0 -E nodiscard "$p3" >/tmp/mke2fs.out 2>&1
    rc=$?
    sed 's/^/cairn: mke2fs: /' /tmp/mke2fs.out
    magic=$(od -An -tx2 -j1080 -N2 "$p3" 2>/dev/null | tr -d ' ')
    label=$(dd if="$p3" bs=1 skip=1144 count=10 2>/dev/null)
    if [ $rc != 0 ] || [ "$magic" != ef53 ] || [ "$label" != cairn-data ]; then
      echo "cairn: mke2fs $p3 failed (exit $rc)"
      return 1
    fi
    set_p3_type "$disk" 203 || { echo "cairn: cannot mark $p3 as made"; return 1; }
    state=created
  else
    data_check "$p3" || return 1
  fi
  mount -t ext4 -o noatime "$p3" /upper 2>/dev/null || { echo "cairn: cannot mount the data partition $p3; using a tmpfs"; return 1; }
  writable="$state:$p3"
}
# The partition whose MBR disk signature and number make PARTUUID=xxxxxxxx-NN.
partuuid() {
  want_disk="${1%-*}"; want_part=$((0x${1##*-}))
  for p in /sys/class/block/*; do
    [ -e "$p/partition" ] || continue
    n=$(cat "$p/partition")
    [ "$n" = "$want_part" ] || continue
    disk=$(basename "$(dirname "$(readlink -f "$p")")")
    sig=$(od -An -tx4 -j440 -N4 "/dev/$disk" 2>/dev/null | tr -d ' ')
    [ "$sig" = "$want_disk" ] && { echo "/dev/${p##*/}"; return 0; }
  done
  return 1
}
# The secrets go to /run/cairn, a tmpfs handed to systemd: never onto the card or the
# writable layer. They are read here, where the boot device and the network are known, so
# nothing depends on udev or network timing later.
mkdir -p /run/cairn
chmod 0700 /run/cairn
secrets_absent() {
  echo "$*" > /run/cairn/secrets.absent
  echo "cairn: secrets are absent: $*"
}
secrets_check() {
  if grep -q '^[A-Za-z_][A-Za-z0-9_]*=' /run/cairn/secrets.env 2>/dev/null; then
    echo "$1" > /run/cairn/secrets.source
    echo "cairn: secrets read from $1"
    return 0
  fi
  rm -f /run/cairn/secrets.env
  return 1
}
# SD: the reserved cairn-secrets.env on the boot partition, partition 1 of the root's disk.
secrets_from_card() {
  sys=$(readlink -f "/sys/class/block/${1##*/}")
  disk=$(basename "$(dirname "$sys")")
  p1=""
  for p in /sys/class/block/"$disk"/"$disk"*; do
    [ "$(cat "$p/partition" 2>/dev/null)" = 1 ] && p1="/dev/${p##*/}"
  done
  [ -n "$p1" ] || { secrets_absent "the root's disk /dev/$disk has no boot partition"; return; }
  mkdir -p /firmware
  mount -t vfat -o ro "$p1" /firmware 2>/dev/null || { secrets_absent "cannot mount the boot partition $p1"; return; }
  (umask 077; sed '/^$/d' /firmware/cairn-secrets.env > /run/cairn/secrets.env 2>/dev/null)
  umount /firmware
  secrets_check "the boot partition ($p1)" ||
    secrets_absent "cairn-secrets.env on $p1 has no KEY=value line: write it with cargo xtask flash NODE --secrets FILE"
}
# PXE: the cairn.secrets= URL (the node's own path on the PXE server), a few tries.
secrets_from_url() {
  n=0
  while [ $n -lt 5 ]; do
    if (umask 077; wget -q -O /run/cairn/secrets.env "$1" 2>/run/cairn/wget.err); then
      rm -f /run/cairn/wget.err
      secrets_check "$1" || secrets_absent "$1 has no KEY=value line"
      return
    fi
    grep -q ' 404 ' /run/cairn/wget.err && break
    n=$((n+1))
    sleep 2
  done
  rm -f /run/cairn/secrets.env
  secrets_absent "$1 could not be fetched ($(tail -n 1 /run/cairn/wget.err)): serve them with the PXE server for this node"
  rm -f /run/cairn/wget.err
}
net_up() {
  for n in /sys/class/net/*; do
    i="${n##*/}"
    [ "$i" = lo ] && continue
    ip link set "$i" up
    udhcpc -q -n -t 10 -T 2 -i "$i" -s /etc/cairn/udhcpc.script >/dev/null 2>&1 && { echo "$i"; return 0; }
  done
  return 1
}
dev=""
case "$root" in
  http://*)
    mount -t tmpfs -o mode=0755 tmpfs /upper || fail "cannot mount the overlay's tmpfs"
    iface=$(net_up) || fail "no network interface got an address by DHCP to fetch $root"
    echo "cairn: fetching $root on $iface"
    wget -q -O /upper/root.squashfs "$root" || fail "cannot fetch $root"
    if [ -n "$root_sha256" ]; then
      echo "$root_sha256  /upper/root.squashfs" | sha256sum -c -s || fail "$root does not have sha256 $root_sha256: refusing it"
    fi
    if [ -n "$secrets_url" ]; then
      secrets_from_url "$secrets_url"
    else
      secrets_absent "no cairn.secrets= URL on the kernel command line"
    fi
    ip addr flush dev "$iface"
    ip link set "$iface" down
    mount -t squashfs -o ro,loop /upper/root.squashfs /lower || fail "$root is not a squashfs"
    ;;
  *)
    i=0
    while [ $i -lt 150 ]; do
      case "$root" in
        LABEL=*) dev=$(findfs "$root" 2>/dev/null) ;;
        PARTUUID=*) dev=$(partuuid "${root#PARTUUID=}") ;;
        *) [ -b "$root" ] && dev="$root" ;;
      esac
      [ -n "$dev" ] && break
      sleep 0.1
      i=$((i+1))
    done
    [ -n "$dev" ] || fail "root $root did not appear"
    if [ -n "$secrets_url" ]; then
      secrets_absent "a cairn.secrets= URL is for PXE nodes; this node boots from $dev"
    else
      secrets_from_card "$dev"
    fi
    data_partition "$dev" || mount -t tmpfs -o mode=0755 tmpfs /upper || fail "cannot mount the overlay's tmpfs"
    mount -t squashfs -o ro "$dev" /lower || fail "cannot mount $dev as squashfs"
    ;;
esac
mkdir -p /upper/data /upper/work
if [ -d /cairn/node ]; then
  # -f: on a data partition from an earlier boot the node's files are there already, and
  # busybox cp refuses to replace a symlink without it.
  cp -af /cairn/node/. /upper/data/ 2>/tmp/cp.err || echo "cairn: warning: the node's files could not all be copied to $writable: $(head -n 3 /tmp/cp.err)"
fi
mkdir -p /upper/data/etc/cairn
echo "$writable" > /upper/data/etc/cairn/writable
echo "cairn: writable layer $writable"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || fail "cannot mount the overlay"
mount --move /dev /newroot/dev || fail "cannot move /dev to the new root"
# The data partition moves along under /run/initramfs, where the running system sees it
# and leaves it mounted until systemd-shutdown's last step, which remounts it read-only
# before it unmounts it (systemd treats /run/initramfs as the initramfs's, and the root
# stands on it): its journal is clean at power-off. Left in the initramfs, or unmounted by
# umount.target while the overlay still holds it, it would never be.
case "$writable" in
  created:* | existing:*)
    mkdir -p /run/initramfs/cairn-data
    mount --move /upper /run/initramfs/cairn-data || echo "cairn: warning: cannot move the data partition to /run/initramfs/cairn-data"
    ;;
esac
mount --move /run /newroot/run || fail "cannot move /run (and the secrets) to the new root"
# The running system's kmod lives at /sbin/modprobe.
echo /sbin/modprobe > /proc/sys/kernel/modprobe
umount /proc /sys
exec switch_root /newroot /sbin/init
