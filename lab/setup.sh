#!/bin/bash
# Prepare the pvesnap storage lab on Debian 12 (root), idempotently, cached under $LAB_DIR.
#
#   apt: bookworm-backports + contrib from this host's own Debian mirror; qemu 10, mmdebstrap …
#   rootfs: Debian bookworm (essential) + lvm2, thin-provisioning-tools, sg3-utils, ddpt, nvme-cli,
#           kpartx, qemu-utils, zfsutils-linux (bpo), perl + libjson-perl (the storage plugin's
#           end-to-end test runs perl/ in the guest) — one rootfs for every kernel
#   kernels: 6.12.117 (current; refuses NVMe CDFE from user space) and 6.12.107 (allows it)
#   zfs.ko for the default kernel, built from zfs-dkms sources without installing anything
#   initramfs per kernel (uncompressed: fastest to unpack under TCG)
#
# Each step leaves a stamp whose content is the step's inputs; a step reruns only when they
# change or its output is missing. Safe to run again at any time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
L=${LAB_DIR:-/var/tmp/pvesnap-lab}
KV_DEFAULT=${LAB_KV:-6.12.117+deb12-amd64}
KV_OLD=${LAB_KV_OLD:-6.12.107+deb12-amd64}
ZFS_VERSION=${LAB_ZFS_VERSION:-2.3.2-2~bpo12+2}
mkdir -p "$L"/{stamps,debs,kernels,out,extra-modules}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[lab setup %s] %s\n' "$(date +%T)" "$*"; }
# fresh STEP INPUTS… : true when the step must run
fresh() { local s=$L/stamps/$1; shift; [ -f "$s" ] && [ "$(cat "$s")" = "$*" ] && return 1; return 0; }
stamp() { local s=$L/stamps/$1; shift; echo "$*" > "$s"; }
timed() { local t0=$SECONDS; "$@"; log "$1 took $((SECONDS - t0)) s"; }

if [ "$(id -u)" != 0 ]; then echo "lab setup needs root (apt, mmdebstrap --mode=root, chroot)" >&2; exit 1; fi

# --- apt ------------------------------------------------------------------------------------
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
bpo=/etc/apt/sources.list.d/pvesnap-lab-backports.sources
if [ ! -f $bpo ]; then
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" > $bpo
  apt-get update -q
fi
need=()
dpkg -s qemu-system-x86 2>/dev/null | grep -q '^Version: 1:10' || need+=(qemu)
for p in mmdebstrap cpio zstd xz-utils dwarves kmod; do dpkg -s $p >/dev/null 2>&1 || need+=($p); done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
  apt-get install -y -q --no-install-recommends mmdebstrap cpio zstd xz-utils dwarves kmod
fi

# --- guest rootfs ---------------------------------------------------------------------------
PKGS="mount,kmod,lsscsi,lvm2,thin-provisioning-tools,dmsetup,sg3-utils,ddpt,nvme-cli,kpartx,busybox-static,e2fsprogs,util-linux,fdisk,procps,xxd,qemu-utils,iproute2,perl,libjson-perl"
ZPKGS="zfsutils-linux/bookworm-backports,libzfs6linux/bookworm-backports,libzpool6linux/bookworm-backports,libnvpair3linux/bookworm-backports,libuutil3linux/bookworm-backports"
R=$L/rootfs
if fresh rootfs "$PKGS $ZPKGS $mirror v4" || [ ! -x $R/usr/sbin/lvm ]; then
  log "building rootfs"
  rm -rf $R
  timed mmdebstrap --variant=essential --mode=root --include="$PKGS,$ZPKGS" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/i18n/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    bookworm $R "deb $mirror bookworm main contrib" "deb $mirror bookworm-backports main contrib"
  # what the guest never runs: apt/dpkg state, python (zfs extras), gconv, perl's C headers and
  # East Asian encodings (perl itself stays: the storage plugin's test runs it)
  rm -rf $R/var/cache/apt/* $R/var/lib/apt/lists/* $R/usr/lib/x86_64-linux-gnu/gconv $R/usr/lib/python3* \
    $R/usr/lib/x86_64-linux-gnu/perl/5.*/CORE $R/usr/lib/x86_64-linux-gnu/perl/5.*/auto/Encode/{CN,JP,KR,TW} \
    $R/usr/bin/python3* $R/usr/share/python3 $R/usr/share/common-licenses $R/usr/share/bash-completion
  mkdir -p $R/etc/pve $R/var/log/pve/tasks $R/var/lib/pvesnap $R/etc/iscsi $R/etc/nvme
  echo "InitiatorName=iqn.1993-08.org.debian:01:pvesnaplab" > $R/etc/iscsi/initiatorname.iscsi
  echo "nqn.2014-08.org.nvmexpress:uuid:5e7a1ab0-0000-4000-8000-00000000a001" > $R/etc/nvme/hostnqn
  stamp rootfs "$PKGS $ZPKGS $mirror v4"
fi

# --- kernels --------------------------------------------------------------------------------
get_kernel() { # KV: extract (never install) the Debian kernel, depmod, and an ELF vmlinux for PVH boot
  local kv=$1 k=$L/kernels/$1
  fresh kernel-$kv "$kv v2" || [ ! -f $k/vmlinux ] || return 0
  log "fetching kernel $kv"
  rm -rf $k; mkdir -p $k
  (cd $L/debs && apt-get download -q linux-image-$kv 2>&1 | grep -v '^W:' || true)
  dpkg-deb -x $L/debs/linux-image-${kv}_*.deb $k
  depmod -b $k $kv
  python3 "$here/extract-vmlinux.py" $k/boot/vmlinuz-$kv $k/vmlinux
  stamp kernel-$kv "$kv v2"
}
get_kernel $KV_DEFAULT
get_kernel $KV_OLD

# --- zfs.ko for the default kernel ----------------------------------------------------------
if [ "${LAB_NO_ZFS:-0}" != 1 ] && { fresh zfs "$KV_DEFAULT $ZFS_VERSION" || ! ls $L/extra-modules/$KV_DEFAULT/zfs.ko >/dev/null 2>&1; }; then
  log "building zfs.ko $ZFS_VERSION for $KV_DEFAULT (several minutes under 2 cores)"
  timed "$here/build-zfs.sh" "$L" "$KV_DEFAULT" "$ZFS_VERSION"
  stamp zfs "$KV_DEFAULT $ZFS_VERSION"
fi

# --- initramfs per kernel -------------------------------------------------------------------
MODS="configfs target_core_mod target_core_file target_core_iblock tcm_loop scsi_mod sd_mod sg
 dm_mod dm_multipath dm_round_robin dm_snapshot dm_thin_pool dm_mirror dm_bufio dm_persistent_data
 nvme nvme_core virtio_blk virtio_scsi virtio_net virtio_pci 9p 9pnet_virtio loop ext4 crc32c_generic overlay null_blk"
for kv in $KV_DEFAULT $KV_OLD; do
  inputs="$kv $(cat $L/stamps/rootfs) $(cat $L/stamps/zfs 2>/dev/null || true) $(sha256sum "$here/guest-init.sh" "$here/lvm-guest.conf" | cut -c1-16 | tr '\n' ' ') $MODS v5"
  fresh initramfs-$kv "$inputs" || [ ! -f $L/out/initramfs-$kv.cpio ] || continue
  log "packing initramfs for $kv"
  rm -rf $R/lib/modules/*
  python3 "$here/copy-modules.py" $L/kernels/$kv $R $kv $MODS
  if [ -d $L/extra-modules/$kv ]; then mkdir -p $R/lib/modules/$kv/updates; cp -a $L/extra-modules/$kv/. $R/lib/modules/$kv/updates/; fi
  find $R/lib/modules/$kv -name '*.ko.xz' -exec xz -d {} +
  depmod -b $R $kv
  install -m 755 "$here/guest-init.sh" $R/init
  install -m 644 "$here/lvm-guest.conf" $R/etc/lvm/lvmlocal.conf
  (cd $R && find . -xdev | LC_ALL=C sort | cpio -o -H newc --quiet) > $L/out/initramfs-$kv.cpio.tmp
  mv $L/out/initramfs-$kv.cpio.tmp $L/out/initramfs-$kv.cpio
  cp $L/kernels/$kv/vmlinux $L/out/vmlinux-$kv
  stamp initramfs-$kv "$inputs"
done
rm -f $L/debs/*.deb.partial 2>/dev/null || true
log "ready: $(ls $L/out | tr '\n' ' ')"
