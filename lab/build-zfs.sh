#!/bin/bash
# Build spl.ko and zfs.ko from zfs-dkms sources for a guest kernel that is not the host's,
# without installing anything: the kernel headers, kbuild and zfs-dkms packages are unpacked
# into a private root. usage: build-zfs.sh LAB_DIR KVER ZFS_VERSION
# Needs pahole (dwarves): without it configure fails with a misleading "CONFIG_MODULES is not
# defined", because BTF generation fails.
set -euo pipefail
L=$1 KV=$2 ZV=$3
command -v pahole >/dev/null || { echo "build-zfs: pahole missing (apt-get install dwarves)" >&2; exit 1; }
R=$L/zfsbuild/root-$KV
rm -rf "$R"; mkdir -p "$R" "$L/debs"
cd "$L/debs"
common=linux-headers-${KV%-amd64}-common kbuild=linux-kbuild-${KV%-amd64}
apt-get download -q "zfs-dkms=$ZV" "linux-headers-$KV" "$common" "$kbuild" 2>&1 | grep -v '^W:' || true
for f in zfs-dkms_*.deb "linux-headers-${KV}"_*.deb "${common}"_*.deb "${kbuild}"_*.deb; do
  dpkg-deb -x "$f" "$R"
done
H=$R/usr/src/linux-headers-$KV
sed -i "s|include /usr/src/|include $R/usr/src/|" "$H/Makefile"
Z=$(ls -d "$R"/usr/src/zfs-* | head -1)
cd "$Z"
./configure --disable-dependency-tracking --with-config=kernel \
  --with-linux="$R/usr/src/$common" --with-linux-obj="$H" > "$L/zfsbuild/configure-$KV.log" 2>&1 \
  || { tail -20 "$L/zfsbuild/configure-$KV.log"; exit 1; }
make -C module -j"$(nproc)" > "$L/zfsbuild/make-$KV.log" 2>&1 || { tail -20 "$L/zfsbuild/make-$KV.log"; exit 1; }
mkdir -p "$L/extra-modules/$KV"
find module -name '*.ko' -exec cp {} "$L/extra-modules/$KV/" \;
strip --strip-debug "$L/extra-modules/$KV"/*.ko   # zfs.ko is ~105 MB with debug info
rm -rf "$R"
ls -la "$L/extra-modules/$KV"
