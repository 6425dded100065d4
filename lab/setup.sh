#!/bin/bash
# Prepare the pvesnap storage lab on Debian 12 (root), idempotently, cached under $LAB_DIR.
#
# Two guest bases, as Proxmox VE runs on them:
#   trixie   (Debian 13, PVE 9, the default): lvm2 2.03.31, zfsutils 2.3.x, systemd 257
#   bookworm (Debian 12, PVE 8):              lvm2 2.03.16, zfsutils 2.3.x from backports
# Each base: a root file system (mmdebstrap: lvm2, thin-provisioning-tools, sg3-utils, ddpt,
# nvme-cli, multipath-tools, open-iscsi, qemu-utils, zfsutils-linux, perl, python3-proxmoxer …), the newest 6.12 kernel
# its archive offers, zfs.ko built from its own zfs-dkms for that kernel with its own
# compiler, and an initramfs per kernel (uncompressed: fastest to unpack under TCG).
# Plus the newest 6.12 kernel older than 6.12.110, the last ones that let user space enable
# NVMe CDFE (the CDFE suite; none left on the mirror: that suite says SKIP).
#
# Versions are chosen from what the mirror offers, not pinned, so the lab keeps working when
# Debian's archive moves on; LAB_KV_TRIXIE, LAB_KV_BOOKWORM, LAB_KV_CDFE, LAB_ZFS_TRIXIE and
# LAB_ZFS_BOOKWORM pin them. The choice is written to $LAB_DIR/out/kernels.env for
# lab/run-tests.sh and lab/labrun.
#
# Each step leaves a stamp whose content is the step's inputs; a step reruns only when they
# change or its output is missing. Safe to run again at any time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
L=${LAB_DIR:-/var/tmp/pvesnap-lab}
mkdir -p "$L"/{stamps,debs,kernels,out,extra-modules,apt}
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
security=${LAB_SECURITY_MIRROR:-$(dirname "$mirror")/debian-security}
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

# Trixie's packages are looked up and downloaded with an apt of their own (the host's stays
# bookworm's): a private state directory, refreshed once a day.
TA=$L/apt/trixie
mkdir -p "$TA"/{lists/partial,archives/partial}
printf 'deb %s trixie main contrib\ndeb %s trixie-updates main contrib\ndeb %s trixie-security main contrib\n' \
  "$mirror" "$mirror" "$security" > "$TA/sources.list"
apt_trixie() {
  apt-get -q -o Dir::Etc::SourceList="$TA/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$TA/lists" -o Dir::State::Status=/dev/null -o Dir::Cache="$TA" \
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Architecture=amd64 "$@"
}
apt_cache_trixie() {
  apt-cache -o Dir::Etc::SourceList="$TA/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$TA/lists" -o Dir::State::Status=/dev/null -o Dir::Cache="$TA" \
    -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= "$@"
}
if [ -z "$(find "$TA/lists" -name '*_Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  log "refreshing trixie's package lists"
  apt_trixie update > "$TA/update.log" 2>&1 || { tail -5 "$TA/update.log"; exit 1; }
fi
apt_base() { local b=$1; shift; if [ "$b" = trixie ]; then apt_trixie "$@"; else apt-get -q "$@"; fi; }
cache_base() { local b=$1; shift; if [ "$b" = trixie ]; then apt_cache_trixie "$@"; else apt-cache "$@"; fi; }

# --- what the mirror offers -------------------------------------------------------------------
# newest_kernel BASE [BELOW]: the newest linux-image-6.12.N+debXX-amd64 (N < BELOW when given)
newest_kernel() {
  local tag=deb12; [ "$1" = trixie ] && tag=deb13
  cache_base "$1" search --names-only "^linux-image-6\.12\.[0-9]+\+${tag}-amd64\$" | awk '{print $1}' \
    | sed 's/^linux-image-//' | awk -F'[.+]' -v below="${2:-100000}" '$3 < below' | sort -V | tail -1
}
# newest_zfs BASE: the newest zfs-dkms of a series pvesnap's ioctls were checked against (2.3)
newest_zfs() {
  cache_base "$1" madison zfs-dkms | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep '^2\.3\.' | sort -V | tail -1
}
KV_TRIXIE=${LAB_KV_TRIXIE:-$(newest_kernel trixie)}
KV_BOOKWORM=${LAB_KV_BOOKWORM:-$(newest_kernel bookworm)}
KV_CDFE=${LAB_KV_CDFE-$(newest_kernel trixie 110)}
ZFS_TRIXIE=${LAB_ZFS_TRIXIE:-$(newest_zfs trixie)}
ZFS_BOOKWORM=${LAB_ZFS_BOOKWORM:-$(newest_zfs bookworm)}
for v in KV_TRIXIE KV_BOOKWORM ZFS_TRIXIE ZFS_BOOKWORM; do
  [ -n "${!v}" ] || { echo "lab setup: the mirror $mirror offers no ${v#*_} for this lab (set LAB_${v})" >&2; exit 1; }
done
log "trixie: kernel $KV_TRIXIE, zfs $ZFS_TRIXIE; bookworm: kernel $KV_BOOKWORM, zfs $ZFS_BOOKWORM; CDFE kernel: ${KV_CDFE:-none on the mirror}"

# --- guest root file systems --------------------------------------------------------------------
# python3-proxmoxer: the independent API client, run against the real-kernel node too; perl
# and libjson-perl: the storage plugin's end-to-end test runs perl/ in the guest; openssh-client
# and openssh-server: the peer of the bench's moves between nodes, zfs send | ssh | zfs recv, as
# PVE's own storage migration runs it.
PKGS="mount,kmod,lsscsi,lvm2,thin-provisioning-tools,dmsetup,sg3-utils,ddpt,nvme-cli,kpartx,busybox-static,e2fsprogs,util-linux,fdisk,procps,xxd,qemu-utils,iproute2,multipath-tools,open-iscsi,python3-proxmoxer,python3-requests,perl,libjson-perl,openssh-client,openssh-server"
rootfs() { # BASE ZFS_VERSION
  local base=$1 zv=$2 R=$L/rootfs-$1 zpkgs suites
  zpkgs="zfsutils-linux=$zv,libzfs6linux=$zv,libzpool6linux=$zv,libnvpair3linux=$zv,libuutil3linux=$zv"
  if [ "$base" = trixie ]; then
    suites=("deb $mirror trixie main contrib" "deb $mirror trixie-updates main contrib" "deb $security trixie-security main contrib")
  else
    suites=("deb $mirror bookworm main contrib" "deb $mirror bookworm-backports main contrib" "deb $security bookworm-security main contrib")
  fi
  local inputs="$PKGS $zpkgs ${suites[*]} v4"
  fresh rootfs-$base "$inputs" || [ ! -x "$R/usr/sbin/lvm" ] || return 0
  log "building the $base root file system"
  rm -rf "$R"
  timed mmdebstrap --variant=essential --mode=root --include="$PKGS,$zpkgs" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/i18n/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    "$base" "$R" "${suites[@]}"
  # what the guest never runs: apt/dpkg state, gconv
  rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/usr/lib/x86_64-linux-gnu/gconv \
    "$R"/usr/share/common-licenses "$R"/usr/share/bash-completion
  mkdir -p "$R/etc/pve" "$R/var/log/pve/tasks" "$R/var/lib/pvesnap" "$R/etc/iscsi" "$R/etc/nvme"
  echo "InitiatorName=iqn.1993-08.org.debian:01:pvesnaplab" > "$R/etc/iscsi/initiatorname.iscsi"
  echo "nqn.2014-08.org.nvmexpress:uuid:5e7a1ab0-0000-4000-8000-00000000a001" > "$R/etc/nvme/hostnqn"
  stamp rootfs-$base "$inputs"
}
rootfs trixie "$ZFS_TRIXIE"
rootfs bookworm "$ZFS_BOOKWORM"

# --- kernels --------------------------------------------------------------------------------------
get_kernel() { # BASE KV: extract (never install) the kernel, depmod, and an ELF vmlinux for PVH boot
  local base=$1 kv=$2 k=$L/kernels/$2
  fresh kernel-$kv "$kv v2" || [ ! -f "$k/vmlinux" ] || return 0
  log "fetching kernel $kv"
  rm -rf "$k"; mkdir -p "$k"
  (cd "$L/debs" && apt_base "$base" download "linux-image-$kv" 2>&1 | grep -v '^W:' || true)
  dpkg-deb -x "$L"/debs/linux-image-"${kv}"_*.deb "$k"
  # Debian 13's packages put modules under /usr/lib (merged /usr); depmod -b wants lib/.
  [ -d "$k/lib/modules" ] || { [ -d "$k/usr/lib/modules" ] && ln -s usr/lib "$k/lib"; }
  depmod -b "$k" "$kv"
  python3 "$here/extract-vmlinux.py" "$k/boot/vmlinuz-$kv" "$k/vmlinux"
  stamp kernel-$kv "$kv v2"
}
get_kernel trixie "$KV_TRIXIE"
get_kernel bookworm "$KV_BOOKWORM"
[ -z "$KV_CDFE" ] || get_kernel trixie "$KV_CDFE"

# --- zfs.ko per base kernel, built with the compiler that built that kernel ------------------------
# Debian 12's kernels are built with the host's gcc 12; Debian 13's with gcc 14, in a trixie
# build root (mmdebstrap buildd variant) where lab/build-zfs.sh runs as on the host.
buildroot_trixie() {
  local B=$L/buildroot-trixie inputs="$mirror $security v1"
  fresh buildroot-trixie "$inputs" || [ ! -x "$B/usr/bin/gcc" ] || return 0
  log "building the trixie build root"
  rm -rf "$B"
  timed mmdebstrap --variant=buildd --mode=root --include=dwarves,bc,kmod,python3,ca-certificates \
    trixie "$B" "deb $mirror trixie main contrib" "deb $mirror trixie-updates main contrib" "deb $security trixie-security main contrib"
  stamp buildroot-trixie "$inputs"
}
build_zfs() { # BASE KV ZFS_VERSION
  local base=$1 kv=$2 zv=$3
  [ "${LAB_NO_ZFS:-0}" != 1 ] || return 0
  fresh zfs-$kv "$kv $zv v2" || ! ls "$L/extra-modules/$kv/zfs.ko" >/dev/null 2>&1 || return 0
  log "building zfs.ko $zv for $kv (several minutes under 2 cores)"
  if [ "$base" = bookworm ]; then
    timed "$here/build-zfs.sh" "$L" "$kv" "$zv"
  else
    buildroot_trixie
    local B=$L/buildroot-trixie
    mkdir -p "$B/lab" "$B/proc"
    cp "$here/build-zfs.sh" "$B/build-zfs.sh"
    mount --bind /proc "$B/proc"
    cp /etc/resolv.conf "$B/etc/resolv.conf" 2>/dev/null || true
    local rc=0
    timed chroot "$B" sh -c "apt-get update -q >/dev/null && /build-zfs.sh /lab $kv $zv" || rc=$?
    umount "$B/proc"
    [ $rc = 0 ] || exit $rc
    mkdir -p "$L/extra-modules/$kv"
    cp -a "$B/lab/extra-modules/$kv/." "$L/extra-modules/$kv/"
    rm -rf "$B/lab"
  fi
  stamp zfs-$kv "$kv $zv v2"
}
build_zfs trixie "$KV_TRIXIE" "$ZFS_TRIXIE"
build_zfs bookworm "$KV_BOOKWORM" "$ZFS_BOOKWORM"

# --- initramfs per kernel -------------------------------------------------------------------------
MODS="configfs target_core_mod target_core_file target_core_iblock tcm_loop iscsi_target_mod scsi_mod sd_mod sg
 scsi_transport_iscsi libiscsi libiscsi_tcp iscsi_tcp
 dm_mod dm_multipath dm_round_robin dm_service_time dm_snapshot dm_thin_pool dm_mirror dm_bufio dm_persistent_data
 nvme nvme_core virtio_blk virtio_scsi virtio_net virtio_pci 9p 9pnet_virtio loop ext4 crc32c_generic overlay null_blk"
initramfs() { # BASE KV
  local base=$1 kv=$2 R=$L/rootfs-$1
  local inputs="$kv $(cat "$L/stamps/rootfs-$base") $(cat "$L/stamps/zfs-$kv" 2>/dev/null || true) $(sha256sum "$here/guest-init.sh" "$here/lvm-guest.conf" | cut -c1-16 | tr '\n' ' ') $MODS v6"
  fresh initramfs-$kv "$inputs" || [ ! -f "$L/out/initramfs-$kv.cpio" ] || return 0
  log "packing the initramfs for $kv ($base)"
  rm -rf "$R"/lib/modules/*
  python3 "$here/copy-modules.py" "$L/kernels/$kv" "$R" "$kv" $MODS
  if [ -d "$L/extra-modules/$kv" ]; then mkdir -p "$R/lib/modules/$kv/updates"; cp -a "$L/extra-modules/$kv/." "$R/lib/modules/$kv/updates/"; fi
  find "$R/lib/modules/$kv" -name '*.ko.xz' -exec xz -d {} +
  depmod -b "$R" "$kv"
  install -m 755 "$here/guest-init.sh" "$R/init"
  install -m 644 "$here/lvm-guest.conf" "$R/etc/lvm/lvmlocal.conf"
  (cd "$R" && find . -xdev | LC_ALL=C sort | cpio -o -H newc --quiet) > "$L/out/initramfs-$kv.cpio.tmp"
  mv "$L/out/initramfs-$kv.cpio.tmp" "$L/out/initramfs-$kv.cpio"
  cp "$L/kernels/$kv/vmlinux" "$L/out/vmlinux-$kv"
  stamp initramfs-$kv "$inputs"
}
initramfs trixie "$KV_TRIXIE"
initramfs bookworm "$KV_BOOKWORM"
[ -z "$KV_CDFE" ] || initramfs trixie "$KV_CDFE"

# What run-tests.sh, labrun, bench and demo boot, and what each base has.
pkgver() { chroot "$L/rootfs-$1" dpkg-query -W -f '${Version}' "$2" 2>/dev/null || echo "?"; }
cat > "$L/out/kernels.env.tmp" <<EOF
KV_TRIXIE=$KV_TRIXIE
KV_BOOKWORM=$KV_BOOKWORM
KV_CDFE=$KV_CDFE
ZFS_TRIXIE=$ZFS_TRIXIE
ZFS_BOOKWORM=$ZFS_BOOKWORM
LVM_TRIXIE=$(pkgver trixie lvm2)
LVM_BOOKWORM=$(pkgver bookworm lvm2)
EOF
mv "$L/out/kernels.env.tmp" "$L/out/kernels.env"
rm -f "$L"/debs/*.deb.partial 2>/dev/null || true
log "ready: $(ls "$L/out" | tr '\n' ' ')"
