#!/bin/bash
# The Debian package, tested as an administrator would meet it: build once, lintian (no
# errors, with Debian 12's and Debian 13's lintian), then on each of Debian 13 (PVE 9) and
# Debian 12 (PVE 8): install into a chroot of it (with a stand-in of pve-manager's dpkg trigger
# on /usr/share/perl5/PVE, which reloads PVE's daemons when a storage plugin comes or goes),
# start the service as systemd would (Type=notify: READY=1 on
# NOTIFY_SOCKET), start a task, upgrade to a rebuilt package while the task's worker runs
# (restart = TERM to the main process only, as KillMode=process does: the task must finish
# OK), remove, purge; each state is checked. This machine has no systemd as PID 1, so
# systemd's part (start, notify, restart) is first played by this script from the unit file
# itself (the unit is checked with systemd-analyze verify), then the whole life is repeated
# under a real systemd, PID 1 of a systemd-nspawn container booted from the same chroot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
L=${LAB_DIR:-/var/tmp/pvesnap-lab}
WW=$root/lab/work/package
DISTS=${PVESNAP_PACKAGE_DISTS:-trixie bookworm}
mirror=${LAB_MIRROR:-$(awk '/^deb / && /bookworm/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)}
security=${LAB_SECURITY_MIRROR:-}
[ -n "$mirror" ] || mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
[ -n "$security" ] || security=$(dirname "$mirror")/debian-security
pass=0
dist=build
ok() { echo "[package $dist] ok: $*"; pass=$((pass + 1)); }
die() { echo "[package $dist] FAIL: $*" >&2; exit 1; }
rm -rf "$WW"; mkdir -p "$WW"
W=$WW

# --- build and lint --------------------------------------------------------------------------
cd "$root"
echo "[package] building"
dpkg-buildpackage -us -uc -b -d > "$W/build.log" 2>&1 || { tail -30 "$W/build.log"; die "dpkg-buildpackage"; }
ver=$(dpkg-parsechangelog -S Version)
mv "../pvesnap_${ver}_amd64.deb" "$W/pvesnap_1.deb"
rm -f ../pvesnap_"${ver}"_amd64.buildinfo ../pvesnap_"${ver}"_amd64.changes
lintian --tag-display-limit 0 "$W/pvesnap_1.deb" > "$W/lintian.log" 2>&1 || true
grep -v 'running with root privileges' "$W/lintian.log" || true
if grep -q '^E:' "$W/lintian.log"; then die "lintian errors"; fi
ok "built $ver; lintian: no errors ($(grep -c '^W:' "$W/lintian.log" || true) warnings)"
# The "rebuilt" package of the upgrade: same contents, a higher version.
dpkg-deb -R "$W/pvesnap_1.deb" "$W/re"
sed -i "s/^Version: .*/Version: ${ver}+rebuild1/" "$W/re/DEBIAN/control"
dpkg-deb --root-owner-group -b "$W/re" "$W/pvesnap_2.deb" > /dev/null
rm -rf "$W/re"

# --- the chroot of a distribution (cached) ----------------------------------------------------
chroot_of() { # DIST: $L/pkgroot-DIST, minbase with what a node has (and lintian, for trixie's)
  local d=$1 R=$L/pkgroot-$1 stamp
  stamp="$mirror $security lintian perl v3"
  if [ ! -f "$R/.stamp" ] || [ "$(cat "$R/.stamp")" != "$stamp" ]; then
    echo "[package $d] building the chroot from $mirror"
    rm -rf "$R"
    mmdebstrap --variant=minbase --mode=root --include=systemd,lvm2,init-system-helpers,procps,curl,ca-certificates,perl,libjson-perl,lintian \
      "$d" "$R" "deb $mirror $d main" "deb $mirror $d-updates main" "deb $security $d-security main" > "$WW/chroot-$d.log" 2>&1 \
      || { tail -20 "$WW/chroot-$d.log"; die "mmdebstrap $d"; }
    echo "$stamp" > "$R/.stamp"
  fi
}
for d in $DISTS; do chroot_of "$d"; done
# Debian 13's lintian on the same package (Debian 12's ran above).
for d in $DISTS; do
  [ "$d" = bookworm ] && continue
  mkdir -p "$L/pkgroot-$d/srv/lint"
  cp "$WW/pvesnap_1.deb" "$L/pkgroot-$d/srv/lint/"
  chroot "$L/pkgroot-$d" lintian --tag-display-limit 0 /srv/lint/pvesnap_1.deb > "$WW/lintian-$d.log" 2>&1 || true
  rm -rf "$L/pkgroot-$d/srv/lint"
  grep -v 'running with root privileges' "$WW/lintian-$d.log" || true
  if grep -q '^E:' "$WW/lintian-$d.log"; then die "lintian errors ($d's lintian $(chroot "$L/pkgroot-$d" dpkg-query -W -f '${Version}' lintian))"; fi
  ok "$d's lintian $(chroot "$L/pkgroot-$d" dpkg-query -W -f '${Version}' lintian): no errors ($(grep -c '^W:' "$WW/lintian-$d.log" || true) warnings)"
done

# --- the package's life on one distribution ---------------------------------------------------
life() { # DIST
dist=$1
R=$L/pkgroot-$dist
W=$WW/$dist
mkdir -p "$W"
mounted=()
cleanup() {
  for p in $(cat "$W"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
for m in proc sys dev; do mount --bind /$m "$R/$m"; mounted+=("$R/$m"); done
inroot() { chroot "$R" "$@"; }
inroot dpkg --purge pvesnap > /dev/null 2>&1 || true
inroot dpkg --purge pvesnap-test-pve-trigger > /dev/null 2>&1 || true
rm -rf "$R/srv/t" "$R/etc/pvesnap" "$R/var/lib/pvesnap" "$R/var/log/pve-trigger-standin.log"
mkdir -p "$R/srv/t"
cp "$WW"/pvesnap_*.deb "$R/srv/t/"
# The storage plugin's tools: stand-ins of PVE's Perl libraries and PVE's part (perl/t).
cp -r "$root/perl/t" "$R/srv/t/perl-t"
standins=/srv/t/perl-t/lib

# pve-manager's trigger (debian/triggers: interest-noawait /usr/share/perl5/PVE), played by a
# package of its own that records each activation, as pve-manager's postinst then reloads
# pvedaemon, pvestatd, pveproxy and the rest.
mkdir -p "$W/trig/DEBIAN"
printf 'Package: pvesnap-test-pve-trigger\nVersion: 1\nArchitecture: all\nMaintainer: test <t@pvesnap.invalid>\nDescription: stand-in of pve-manager'"'"'s trigger\n' > "$W/trig/DEBIAN/control"
echo 'interest-noawait /usr/share/perl5/PVE' > "$W/trig/DEBIAN/triggers"
printf '#!/bin/sh\n[ "$1" = triggered ] && echo "$2" >> /var/log/pve-trigger-standin.log\nexit 0\n' > "$W/trig/DEBIAN/postinst"
chmod 755 "$W/trig/DEBIAN/postinst"
dpkg-deb --root-owner-group -b "$W/trig" "$R/srv/t/trig.deb" > /dev/null
inroot dpkg -i /srv/t/trig.deb > /dev/null 2>&1 || die "the trigger stand-in did not install"
triggered() { grep -c /usr/share/perl5/PVE "$R/var/log/pve-trigger-standin.log" 2>/dev/null || true; }

# --- install ---------------------------------------------------------------------------------
inroot dpkg -i /srv/t/pvesnap_1.deb > "$W/install.log" 2>&1 || { cat "$W/install.log"; die "dpkg -i"; }
[ -x "$R/usr/bin/pvesnap" ] && [ -f "$R/usr/lib/systemd/system/pvesnap.service" ] && [ -f "$R/etc/pvesnap/pvesnap.yaml" ] \
  && [ -f "$R/usr/share/man/man1/pvesnap.1.gz" ] && [ -f "$R/usr/share/bash-completion/completions/pvesnap" ] || die "files missing after install"
[ -L "$R/etc/systemd/system/multi-user.target.wants/pvesnap.service" ] || die "service not enabled"
[ "$(stat -c %a "$R/var/lib/pvesnap")" = 700 ] || die "/var/lib/pvesnap mode"
inroot pvesnap config check > /dev/null || die "the shipped config does not check"
inroot systemd-analyze verify /usr/lib/systemd/system/pvesnap.service > "$W/verify.log" 2>&1 || true
if grep -v -e 'pve-cluster.service' -e 'pveproxy.service' -e "Command 'man " -e '^$' "$W/verify.log" | grep -q .; then cat "$W/verify.log"; die "systemd-analyze verify"; fi
ok "installed: binary, unit (enabled, verified), conffile, man page, completion, state dir"

# --- the storage plugin --------------------------------------------------------------------------
plugin=/usr/share/perl5/PVE/Storage/Custom/PvesnapPlugin.pm
bprov=/usr/share/perl5/PVE/BackupProvider/Plugin/Pvesnap.pm
[ -f "$R$plugin" ] && [ -f "$R$bprov" ] || die "plugin modules missing after install"
[ "$(triggered)" = 1 ] || die "installing the plugin did not activate pve-manager's trigger ($(triggered) activations)"
for m in $plugin $bprov; do
  inroot perl -I$standins -c $m > "$W/perl-c.log" 2>&1 || { cat "$W/perl-c.log"; die "perl -c $m"; }
  grep -q 'syntax OK' "$W/perl-c.log" || die "perl -c $m: $(cat "$W/perl-c.log")"
done
loaded=$(inroot env PVESNAP_TEST_CUSTOM_DIR=/usr/share/perl5/PVE/Storage/Custom perl -I$standins -e \
  'use PVE::Storage; my $p = PVE::Storage::Plugin->lookup("pvesnap"); print $p->api(), " ", PVE::Storage::Plugin::storage_has_feature("pvesnap", "backup-provider"), "\n"' 2>&1)
[ "$loaded" = "15 1" ] || die "the installed plugin did not load with the loader's rule: $loaded"
ok "storage plugin installed under /usr/share/perl5/PVE (pve-manager's trigger activated), perl -c OK, loaded as API 15 with the backup-provider feature"

# --- a node for it to serve: simulated PVE and FlashArray, shims for pvs/lvs/qm -----------------
chroot "$R" sh -c 'exec pvesnap sim pve --dir /srv/t/sim --listen pve1=127.0.0.1:18006 --auth-fail-delay 0s' > "$W/simpve.log" 2>&1 &
echo $! > "$W/simpve.pid"
chroot "$R" sh -c 'exec pvesnap sim flasharray --dir /srv/t/fa --listen 127.0.0.1:18443 --host pve1=iqn.1993-08.org.debian:01:pve1 --volume pve-san1=1024' > "$W/fa.log" 2>&1 &
echo $! > "$W/fa.pid"
for i in $(seq 100); do grep -q '^login:' "$W/simpve.log" && grep -q '^flasharray' "$W/fa.log" && break; sleep 0.2; done
pvedir=$(sed -n 's/^node pve1: .*\/etc\/pve \([^ ]*\) .*/\1/p' "$W/simpve.log")
tasksdir=$(sed -n 's/^node pve1: .* tasks \([^ ]*\)$/\1/p' "$W/simpve.log")
serial=$(sed -n 's/^volume pve-san1 serial //p' "$W/fa.log")
[ -n "$pvedir" ] && [ -n "$serial" ] || { cat "$W/simpve.log" "$W/fa.log"; die "simulators did not start"; }
naa=624a9370$(echo "$serial" | tr A-F a-f)
mkdir -p "$R/srv/t/hw/dev" "$R/srv/t/hw/sys/class/block/sdb/device" "$R/srv/t/iscsi" "$R/srv/t/shims"
: > "$R/srv/t/hw/dev/sdb"
echo "naa.$naa" > "$R/srv/t/hw/sys/class/block/sdb/device/wwid"
echo "InitiatorName=iqn.1993-08.org.debian:01:pve1" > "$R/srv/t/iscsi/initiatorname.iscsi"
lvtime=$(date -u -d '-2 hours' '+%Y-%m-%d %H:%M:%S +0000')
cat > "$R/srv/t/shims/pvs" <<EOF
#!/bin/sh
echo '{"report":[{"pv":[{"pv_name":"/dev/sdb","vg_name":"vgsan1","pv_uuid":"p","pv_size":"1099511627776","pe_start":"1048576","dev_size":"1099511627776"}]}]}'
EOF
cat > "$R/srv/t/shims/lvs" <<EOF
#!/bin/sh
echo '{"report":[{"lv":[{"vg_name":"vgsan1","lv_name":"vm-100-disk-0","lv_uuid":"uuid-disk-0","lv_size":"4294967296","lv_attr":"-wi-a-----","lv_time":"$lvtime","lv_tags":"pve-vm-100"}]}]}'
EOF
# qm: the guest agent answers slowly, so the snapshot task is still running during the upgrade.
cat > "$R/srv/t/shims/qm" <<'EOF'
#!/bin/sh
[ "$1 $2" = "guest cmd" ] || exit 2
case "$4" in
  ping) sleep 12 ;;
  fsfreeze-freeze|fsfreeze-thaw) echo 1 ;;
  *) exit 2 ;;
esac
EOF
chmod +x "$R"/srv/t/shims/*
printf 'lvm: san1\n\tvgname vgsan1\n\tcontent images\n\tshared 1\n\npvesnap: snaps\n\tcontent backup\n\tpvesnap-vmids 100\n' > "$R/srv/t/sim/pve/storage.cfg"
cp "$R/srv/t/sim/pve/storage.cfg" "$W/storage.cfg.expected"
printf 'name: web\nagent: 1\nmeta: ctime=%s\nscsi0: san1:vm-100-disk-0,size=4G\n' "$(date -d '-3 hours' +%s)" > "$R/srv/t/sim/pve/nodes/pve1/qemu-server/100.conf"
cat > "$R/etc/pvesnap/pvesnap.yaml" <<EOF
# changed by the package test (a conffile an upgrade must keep)
listen: 127.0.0.1:18009
upstream: https://127.0.0.1:18006
node: pve1
refresh_interval: 0s
timeouts:
  auth_fail_delay: 0s
paths:
  pve: $pvedir
  tasks: $tasksdir
  sys: /srv/t/hw/sys
  dev: /srv/t/hw/dev
  iscsi: /srv/t/iscsi
  bin: /srv/t/shims:/usr/sbin:/usr/bin:/sbin:/bin
EOF
cp "$R/etc/pvesnap/pvesnap.yaml" "$W/conffile.expected"
inroot pvesnap arrays add --endpoint https://127.0.0.1:18443 --ca /srv/t/fa/ca.pem --token-file /srv/t/fa/api-token fa1 > "$W/arrays.log" 2>&1 \
  || { cat "$W/arrays.log"; die "arrays add"; }

# --- start the service as systemd would -------------------------------------------------------
exec_start=$(sed -n 's/^ExecStart=//p' "$R/usr/lib/systemd/system/pvesnap.service")
start_service() { # NAME: run ExecStart with a notify socket; wait for READY=1
  rm -f "$R/run/pvesnap-notify.sock" "$W/notify-$1.log"
  python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(60)
out = open(sys.argv[2], "a")
while True:
    try: m = s.recv(4096).decode()
    except socket.timeout: break
    out.write(m + "\n"); out.flush()
' "$R/run/pvesnap-notify.sock" "$W/notify-$1.log" &
  echo $! > "$W/notify-$1.pid"
  for i in $(seq 50); do [ -S "$R/run/pvesnap-notify.sock" ] && break; sleep 0.1; done
  chroot "$R" env NOTIFY_SOCKET=/run/pvesnap-notify.sock $exec_start > "$W/daemon-$1.log" 2>&1 &
  echo $! > "$W/daemon-$1.pid"
  for i in $(seq 150); do grep -q '^READY=1' "$W/notify-$1.log" 2>/dev/null && return 0; sleep 0.2; done
  cat "$W/daemon-$1.log"; die "no READY=1 from $exec_start"
}
start_service 1
ok "service started: READY=1 on NOTIFY_SOCKET ($(grep -c WATCHDOG=1 "$W/notify-1.log" || true) watchdog pings so far)"

api() { # METHOD PATH [curl args…]
  local m=$1 p=$2; shift 2
  curl -sk -X "$m" -b "PVEAuthCookie=$ticket" -H "CSRFPreventionToken: $csrf" "https://127.0.0.1:18009/api2/json$p" "$@"
}
login=$(curl -sk -d username=root@pam -d password=pvesnap https://127.0.0.1:18009/api2/json/access/ticket)
ticket=$(echo "$login" | python3 -c 'import json,sys,urllib.parse; print(urllib.parse.quote(json.load(sys.stdin)["data"]["ticket"]))')
csrf=$(echo "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["CSRFPreventionToken"])')
upid=$(api POST /nodes/pve1/pvesnap/vms/100/snapshot -d suffix=upgrade-test | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"])')
case $upid in UPID:pve1:*) ;; *) die "snapshot task did not start: $upid";; esac
sleep 2
status() { api GET "/nodes/pve1/tasks/$upid/status" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["status"], d.get("exitstatus",""))'; }
[ "$(status)" = "running " ] || die "task not running before the upgrade: $(status)"
ok "task $upid running"

# --- upgrade while the worker runs --------------------------------------------------------------
inroot dpkg -i --force-confold /srv/t/pvesnap_2.deb > "$W/upgrade.log" 2>&1 || { cat "$W/upgrade.log"; die "upgrade"; }
[ "$(inroot dpkg-query -W -f '${Version}' pvesnap)" = "${ver}+rebuild1" ] || die "version after upgrade"
cmp -s "$R/etc/pvesnap/pvesnap.yaml" "$W/conffile.expected" || die "the changed conffile was not kept"
# systemd's restart with KillMode=process: TERM to the main process only.
kill -TERM "$(cat "$W/daemon-1.pid")"
for i in $(seq 100); do kill -0 "$(cat "$W/daemon-1.pid")" 2>/dev/null || break; sleep 0.2; done
! kill -0 "$(cat "$W/daemon-1.pid")" 2>/dev/null || die "daemon did not stop on TERM"
start_service 2
ok "upgraded to ${ver}+rebuild1 (conffile kept) and restarted while the task ran: READY=1"
for i in $(seq 150); do s=$(status); [ "${s%% *}" = stopped ] && break; sleep 0.2; done
[ "$(status)" = "stopped OK" ] || { api GET "/nodes/pve1/tasks/$upid/log"; die "task after the upgrade: $(status)"; }
log=$(api GET "/nodes/pve1/tasks/$upid/log?limit=100")
echo "$log" | grep -q 'guest filesystems frozen' && echo "$log" | grep -q 'created pve-san1.upgrade-test' || { echo "$log"; die "task log"; }
ok "the task started before the upgrade finished OK"
# The plugin, as pvesm lists content, against the upgraded daemon: the snapshot is a VM archive.
list=$(inroot perl -T /srv/t/perl-t/pve-standin.pl --custom-dir /usr/share/perl5/PVE/Storage/Custom \
  --storage-cfg "$pvedir/storage.cfg" snaps list)
echo "$list" | python3 -c '
import json, re, sys
d = json.load(sys.stdin)
v = d.get("volumes") or sys.exit("no volumes: %s" % d)
assert len(v) == 1 and re.match(r"^snaps:backup/pvesnap-qemu-100-\d+-fa1:upgrade-test$", v[0]["volid"]) and v[0]["subtype"] == "qemu", v
' || die "the plugin's listing after the upgrade: $list"
cmp -s "$R/srv/t/sim/pve/storage.cfg" "$W/storage.cfg.expected" || die "storage.cfg changed by the upgrade"
[ "$(triggered)" = 2 ] || die "the upgrade did not activate pve-manager's trigger ($(triggered) activations)"
ok "after the upgrade: storage.cfg's pvesnap entry unchanged, the plugin lists the VM's snapshot as an archive"
kill -TERM "$(cat "$W/daemon-2.pid")"; sleep 1

# --- remove, purge ---------------------------------------------------------------------------
inroot dpkg -r pvesnap > "$W/remove.log" 2>&1 || { cat "$W/remove.log"; die "dpkg -r"; }
[ ! -e "$R/usr/bin/pvesnap" ] && [ -f "$R/etc/pvesnap/pvesnap.yaml" ] && [ -d "$R/var/lib/pvesnap" ] || die "state after remove"
[ ! -e "$R$plugin" ] && [ ! -e "$R$bprov" ] || die "plugin modules left after remove"
[ "$(triggered)" = 3 ] || die "the removal did not activate pve-manager's trigger ($(triggered) activations)"
ok "removed: binary and plugin gone (pve-manager's trigger activated), config and state kept"
inroot dpkg -P pvesnap > "$W/purge.log" 2>&1 || { cat "$W/purge.log"; die "dpkg -P"; }
[ ! -e "$R/etc/pvesnap" ] && [ ! -e "$R/var/lib/pvesnap" ] && [ ! -e "$R/etc/systemd/system/multi-user.target.wants/pvesnap.service" ] \
  && [ -f "$R/srv/t/sim/pve/pvesnap/arrays.cfg" ] || die "state after purge"
cmp -s "$R/srv/t/sim/pve/storage.cfg" "$W/storage.cfg.expected" || die "storage.cfg changed by remove or purge"
ok "purged: config, state and enablement gone; the cluster-wide arrays.cfg and storage.cfg kept"

# --- the same life under a real systemd ------------------------------------------------------
# Above, this script plays systemd's part from the unit file. Here the chroot boots as a
# systemd-nspawn container (changes in a throw-away overlay) and systemd itself starts the unit
# from the postinst, waits for READY=1, restarts it on upgrade, reloads, stops and disables it:
# lab/package-systemd.sh runs inside and checks each state. Where systemd-nspawn cannot boot a
# container, the phase is skipped with the reason; the phase above still ran.
systemd_phase() {
  if ! command -v systemd-nspawn > /dev/null; then
    echo "[package] SKIP the systemd phase: systemd-nspawn is missing (apt-get install systemd-container)"
    return
  fi
  cleanup # the simulators above go, and proc/sys/dev: the container mounts its own
  mounted=()
  sleep 1
  local N=$W/nspawn
  rm -rf "$N"; mkdir -p "$N/bin"
  cp "$WW"/pvesnap_1.deb "$WW"/pvesnap_2.deb "$W/conffile.expected" "$here/package-systemd.sh" "$N/"
  cp -a "$R/srv/t/shims" "$R/srv/t/hw" "$R/srv/t/iscsi" "$N/" # the node's stand-ins from above
  # The simulators run from the package's own binary (installed or not).
  dpkg-deb --fsys-tarfile "$WW/pvesnap_1.deb" | tar -xOf - ./usr/bin/pvesnap > "$N/bin/pvesnap"
  chmod 755 "$N/bin/pvesnap"
  printf '%s\n' '[Unit]' 'Description=pvesnap package test under systemd' 'After=basic.target' '' \
    '[Service]' 'Type=oneshot' 'ExecStart=/bin/bash /srv/t/package-systemd.sh' 'TimeoutStartSec=300' > "$W/pvesnap-pkgtest.service"
  timeout 420 systemd-nspawn -q -D "$R" --volatile=overlay --register=no --keep-unit --bind="$N:/srv/t" \
    --bind-ro="$W/pvesnap-pkgtest.service:/etc/systemd/system/pvesnap-pkgtest.service" \
    -b -- systemd.wants=pvesnap-pkgtest.service > "$W/nspawn.log" 2>&1 || true
  if [ ! -f "$N/systemd.rc" ]; then
    if grep -q 'Welcome to' "$W/nspawn.log"; then
      tail -40 "$W/nspawn.log"; cat "$N/systemd.out" 2> /dev/null; die "the systemd phase did not finish"
    fi
    echo "[package] SKIP the systemd phase: systemd-nspawn could not boot the chroot here:"
    tail -5 "$W/nspawn.log" | sed 's/^/[package]   /'
    return
  fi
  sed "s/^\[systemd\]/[systemd $dist]/" "$N/systemd.out" | grep '^\[systemd'

  [ "$(cat "$N/systemd.rc")" = 0 ] || { cat "$N/systemd.out"; die "the systemd phase"; }
  pass=$((pass + $(grep -c '^\[systemd\] ok:' "$N/systemd.out")))
}
systemd_phase
cleanup
}

for d in $DISTS; do
  before=$pass
  life "$d"
  echo "[package $d] $((pass - before)) checks passed"
done
echo "[package] $pass checks passed on $DISTS"
