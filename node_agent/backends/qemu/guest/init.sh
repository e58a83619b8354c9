#!/bin/sh
# slicemesh VM sliver, initramfs stage (PID 1 until it execs the guest agent).
#
# The initramfs holds the image tree at /image (the busybox base every sliver shares), the
# kernel modules in load order, and /slicemesh/ (this sliver's config, appended by the host
# as a second cpio archive). The sliver's root is an overlay: /image below, upper/ and work/
# on the sliver's own ext4 disk (/dev/vda) above: the same layout as a container sliver's
# disk, so whatever a user writes lives on the disk and moves with it. The lower layer stays
# in the initramfs (no copy); only the module files are deleted to give their memory back.
#
# Failures end the boot with an "error" event on the events port and a power-off, so the
# host shows a reason instead of a guest that never answers.
set -u
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
EVENTS=""

fail() {
    echo "slicemesh-init: $*" >&2
    [ -n "$EVENTS" ] && printf '{"event": "error", "reason": "%s"}\n' "$*" > "$EVENTS"
    sync
    poweroff -f
}

mount -t proc proc /proc && mount -t sysfs sys /sys && mount -t devtmpfs dev /dev || fail "cannot mount /proc, /sys and /dev"
stty -F /dev/console -onlcr 2>/dev/null  # "\n" stays "\n" in the console log, as in a container's
if grep -qw slicemesh.probe /proc/cmdline; then  # the accelerator probe: userspace reached, done
    echo "slicemesh-probe: ok"
    poweroff -f
fi
for m in $(cat /lib/modules/load); do
    insmod "/lib/modules/$m.ko" || fail "cannot load kernel module $m"
done
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.slicemesh.events.0 ] && EVENTS="/dev/${p##*/}"
done
[ -f /slicemesh/config ] || fail "no /slicemesh/config in the initramfs"
. /slicemesh/config

hostname "$SLIVER_HOSTNAME"
ip link set lo up
if [ -n "$SLIVER_ADDRESS" ]; then
    ip link set eth0 up && ip addr add "$SLIVER_ADDRESS" dev eth0 && ip route add default via "$SLIVER_GATEWAY" \
        || fail "cannot configure eth0 with $SLIVER_ADDRESS"
fi

mkdir -p /mnt/disk /newroot
mount -t ext4 -o errors=remount-ro /dev/vda /mnt/disk || fail "cannot mount the sliver disk /dev/vda"
mkdir -p /mnt/disk/upper /mnt/disk/work
mount -t overlay overlay -o lowerdir=/image,upperdir=/mnt/disk/upper,workdir=/mnt/disk/work /newroot || fail "cannot mount the overlay root"
mount -t tmpfs -o mode=0755,size=1m run /newroot/run || fail "cannot mount /run"
if [ "$SLIVER_CODE" = 1 ]; then
    mkdir -p /newroot/code && mount -t ext4 -o ro /dev/vdb /newroot/code || fail "cannot mount the slice's code /dev/vdb at /code"
fi
mkdir /newroot/run/slicemesh && cp /slicemesh/argv /slicemesh/env /slicemesh/stop_grace /newroot/run/slicemesh/ || fail "cannot copy the sliver config"
echo "$SLIVER_HOSTNAME" > /newroot/etc/hostname
if [ -d /slicemesh/etc ]; then cp /slicemesh/etc/* /newroot/etc/ || fail "cannot write /etc/hosts and resolv.conf"; fi
for d in dev proc sys; do mount --move "/$d" "/newroot/$d" || fail "cannot move /$d"; done
rm -rf /lib/modules /slicemesh
dmesg -n 4  # the boot was quiet (loglevel=3); from here warnings and errors reach the log again
cd /newroot && mount --move . / || fail "cannot move the new root"
exec chroot . /sbin/slicemesh-agent
