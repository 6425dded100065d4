#!/bin/sh
# PID 1 of the lab guest. The root file system is the initramfs itself (no switch_root).
# Mounts the usual file systems, loads drivers for the devices present (there is no udev),
# mounts the host's 9p share at /mnt/host, runs /mnt/host/$lab.script (default run.sh),
# writes its exit status to /mnt/host/.rc and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LC_ALL=C
up() { cut -d' ' -f1 /proc/uptime; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /mnt/host
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /run/lvm /var/lock
ln -sf /proc/self/fd /dev/fd
modprobe -q configfs && mount -t configfs configfs /sys/kernel/config 2>/dev/null
# "coldplug": drivers for the PCI and virtio devices present
for pass in 1 2; do
  for m in /sys/bus/pci/devices/*/modalias /sys/bus/virtio/devices/*/modalias; do
    [ -r "$m" ] && modprobe -qab "$(cat "$m")" 2>/dev/null
  done
  modprobe -qa 9pnet_virtio 9p
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,cache=none host /mnt/host \
  || { echo "LAB: 9p mount failed"; busybox poweroff -f; }
ip link set lo up 2>/dev/null
if [ -d /sys/class/net/eth0 ]; then   # QEMU user networking: fixed address, host is 10.0.2.2
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
fi
script=run.sh
for a in $(cat /proc/cmdline); do case $a in lab.script=*) script=${a#lab.script=};; lab.hostname=*) hostname "${a#lab.hostname=}";; esac; done
echo "LAB: guest up at $(up)s, kernel $(uname -r), running $script"
cd /mnt/host
if [ -f "$script" ]; then sh "./$script"; rc=$?; else echo "LAB: no $script"; rc=127; fi
echo $rc > /mnt/host/.rc
echo "LAB: done rc=$rc at $(up)s"
sync
umount /mnt/host 2>/dev/null
busybox poweroff -f 2>/dev/null || echo o > /proc/sysrq-trigger
