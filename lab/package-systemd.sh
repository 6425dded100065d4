#!/bin/bash
# The package's life under a real systemd (PID 1 of a systemd-nspawn container booted from the
# package test's Debian 13 or 12 chroot): run at boot by pvesnap-pkgtest.service, it installs the
# package (the postinst enables and starts the unit), checks that systemd got READY=1 and the
# STATUS line, starts a task, upgrades to the rebuilt package while the task's worker runs
# (systemd restarts the daemon; KillMode=process leaves the worker), reloads, removes and
# purges — and checks each state as systemctl reports it. Results go to /srv/t/systemd.out,
# the exit status to /srv/t/systemd.rc; then it powers the container off.
# Called by lab/package-test.sh; everything it needs is under /srv/t.
set -uo pipefail
exec > /srv/t/systemd.out 2>&1
pass=0
ok() { echo "[systemd] ok: $*"; pass=$((pass + 1)); }
finish() { echo "$1" > /srv/t/systemd.rc; systemctl poweroff --no-block; exit "$1"; }
die() { echo "[systemd] FAIL: $*"; journalctl -b --no-pager -u pvesnap 2>/dev/null | tail -40; finish 1; }
prop() { systemctl show -P "$1" pvesnap.service; }
T=/srv/t
S=$T/sys2 # fresh simulator state for this phase

# A node for the service: the simulators (from the package's own binary, unpacked beforehand).
$T/bin/pvesnap sim pve --dir $S/sim --listen pve1=127.0.0.1:18006 --auth-fail-delay 0s > $T/simpve2.log 2>&1 &
$T/bin/pvesnap sim flasharray --dir $S/fa --listen 127.0.0.1:18443 --host pve1=iqn.1993-08.org.debian:01:pve1 --volume pve-san1=1024 > $T/fa2.log 2>&1 &
for i in $(seq 150); do grep -q '^login:' $T/simpve2.log && grep -q '^flasharray' $T/fa2.log && break; sleep 0.2; done
pvedir=$(sed -n 's/^node pve1: .*\/etc\/pve \([^ ]*\) .*/\1/p' $T/simpve2.log)
tasksdir=$(sed -n 's/^node pve1: .* tasks \([^ ]*\)$/\1/p' $T/simpve2.log)
serial=$(sed -n 's/^volume pve-san1 serial //p' $T/fa2.log)
[ -n "$pvedir" ] && [ -n "$tasksdir" ] && [ -n "$serial" ] || { cat $T/simpve2.log $T/fa2.log; die "simulators did not start"; }
# The node's disk sdb is this array's volume pve-san1 (shims for pvs, lvs, qm in $T/shims).
echo "naa.624a9370$(echo "$serial" | tr A-F a-f)" > $T/hw/sys/class/block/sdb/device/wwid
printf 'lvm: san1\n\tvgname vgsan1\n\tcontent images\n\tshared 1\n' > $S/sim/pve/storage.cfg
printf 'name: web\nagent: 1\nmeta: ctime=%s\nscsi0: san1:vm-100-disk-0,size=4G\n' "$(date -d '-3 hours' +%s)" > $S/sim/pve/nodes/pve1/qemu-server/100.conf
# The administrator's configuration, in place before the install (dpkg keeps it: confold).
mkdir -p /etc/pvesnap
sed -e "s#^  pve: .*#  pve: $pvedir#" -e "s#^  tasks: .*#  tasks: $tasksdir#" $T/conffile.expected > /etc/pvesnap/pvesnap.yaml
$T/bin/pvesnap arrays add --endpoint https://127.0.0.1:18443 --ca $S/fa/ca.pem --token-file $S/fa/api-token fa1 > /dev/null \
  || die "arrays add"

# --- install: the postinst enables and starts the unit -----------------------------------------
dpkg -i --force-confold $T/pvesnap_1.deb > $T/systemd-install.log 2>&1 || { cat $T/systemd-install.log; die "dpkg -i"; }
for i in $(seq 150); do [ "$(prop ActiveState)" = active ] && break; sleep 0.2; done
# Type=notify: "active" means systemd received READY=1.
[ "$(prop ActiveState)" = active ] && [ "$(prop SubState)" = running ] || die "after install: $(prop ActiveState)/$(prop SubState)"
[ "$(systemctl is-enabled pvesnap.service)" = enabled ] || die "not enabled"
status=$(prop StatusText)
case $status in *127.0.0.1:18009*) ;; *) die "STATUS line: '$status'";; esac
pid1=$(prop MainPID)
ok "installed: enabled, started by the postinst, READY=1 (active/running), STATUS \"$status\""

api() { # METHOD PATH [curl args…]
  local m=$1 p=$2; shift 2
  curl -sk -X "$m" -b "PVEAuthCookie=$ticket" -H "CSRFPreventionToken: $csrf" "https://127.0.0.1:18009/api2/json$p" "$@"
}
login=$(curl -sk -d username=root@pam -d password=pvesnap https://127.0.0.1:18009/api2/json/access/ticket)
ticket=$(echo "$login" | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p' | sed 's/:/%3A/g; s/=/%3D/g; s#/#%2F#g; s/+/%2B/g')
csrf=$(echo "$login" | sed -n 's/.*"CSRFPreventionToken":"\([^"]*\)".*/\1/p')
[ -n "$ticket" ] && [ -n "$csrf" ] || die "login through :18009: $login"
upid=$(api POST /nodes/pve1/pvesnap/vms/100/snapshot -d suffix=systemd-test | sed -n 's/.*"data":"\(UPID:[^"]*\)".*/\1/p')
[ -n "$upid" ] || die "snapshot task did not start"
taskstatus() { api GET "/nodes/pve1/tasks/$upid/status" | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p'; }
exitstatus() { api GET "/nodes/pve1/tasks/$upid/status" | sed -n 's/.*"exitstatus":"\([^"]*\)".*/\1/p'; }
sleep 2
[ "$(taskstatus)" = running ] || die "task not running before the upgrade: $(taskstatus)"
ok "task $upid running"

# --- upgrade while the worker runs: dh_installsystemd restarts the unit ----------------------
dpkg -i --force-confold $T/pvesnap_2.deb > $T/systemd-upgrade.log 2>&1 || { cat $T/systemd-upgrade.log; die "upgrade"; }
for i in $(seq 150); do [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$pid1" ] && break; sleep 0.2; done
pid2=$(prop MainPID)
[ "$(prop ActiveState)" = active ] && [ "$pid2" != "$pid1" ] && [ "$pid2" != 0 ] || die "after upgrade: $(prop ActiveState), MainPID $pid1 -> $pid2"
cmp -s /etc/pvesnap/pvesnap.yaml <(sed -e "s#^  pve: .*#  pve: $pvedir#" -e "s#^  tasks: .*#  tasks: $tasksdir#" $T/conffile.expected) \
  || die "the changed conffile was not kept"
ok "upgraded to $(dpkg-query -W -f '${Version}' pvesnap): systemd restarted the daemon (MainPID $pid1 -> $pid2), READY=1 again, conffile kept"
for i in $(seq 150); do [ "$(taskstatus)" = stopped ] && break; sleep 0.2; done
[ "$(exitstatus)" = OK ] || die "task after the upgrade: $(taskstatus) $(exitstatus)"
ok "the task started before the upgrade finished OK (its worker outlived the restart: KillMode=process)"

# --- reload: SIGHUP, same process ------------------------------------------------------------
systemctl reload pvesnap.service || die "reload"
sleep 1
[ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" = "$pid2" ] || die "after reload: $(prop ActiveState), MainPID $(prop MainPID)"
ok "reloaded (SIGHUP): still active, same MainPID"

# --- remove, purge ---------------------------------------------------------------------------
dpkg -r pvesnap > $T/systemd-remove.log 2>&1 || { cat $T/systemd-remove.log; die "dpkg -r"; }
state=$(systemctl show -P ActiveState pvesnap.service)
[ "$state" != active ] && [ ! -e /usr/bin/pvesnap ] && [ -f /etc/pvesnap/pvesnap.yaml ] || die "after remove: $state"
ok "removed: service stopped ($state), binary gone, config kept"
dpkg -P pvesnap > $T/systemd-purge.log 2>&1 || { cat $T/systemd-purge.log; die "dpkg -P"; }
[ ! -e /etc/pvesnap ] && [ ! -e /var/lib/pvesnap ] && [ "$(systemctl is-enabled pvesnap.service 2>&1)" != enabled ] || die "after purge"
ok "purged: config, state and enablement gone"
echo "[systemd] $pass checks passed"
finish 0
