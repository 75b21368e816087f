#!/usr/bin/env bash
# The packaged service under a real systemd: installs the .deb into a debootstrapped Debian
# bookworm root, boots it with `systemd-nspawn --boot`, and inside it starts tensord with
# systemctl (Type=notify), queries and uses it with tensorctl, reloads it, stops it (drain, exit
# 0, segments gone) and checks that installing enabled nothing and created the user.
#   nspawn_test.sh DEB
# Exit 0 pass, 1 fail, 77 skipped (not root, or no systemd-nspawn/debootstrap). The base root
# (with the package's dependencies) is cached in $TENSORD_NSPAWN_CACHE (default
# /var/cache/tensord-it); building it once needs the Debian mirror.
set -euo pipefail
deb=$(realpath "${1:?usage: nspawn_test.sh DEB}")
skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root for systemd-nspawn"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn missing (package systemd-container)"
command -v debootstrap >/dev/null || skip "debootstrap missing"

cache=${TENSORD_NSPAWN_CACHE:-/var/cache/tensord-it}
base=$cache/bookworm-base
mkdir -p "$cache"
nspawn() { systemd-nspawn -q --register=no --keep-unit "$@"; }

if [[ ! -f $base/.complete ]]; then
  echo "nspawn_test: building the base root in $base (once; needs the Debian mirror)"
  rm -rf "$base"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$base" \
    http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log"; exit 1; }
  # The package's dependencies go into the base: install it, then remove only it.
  cp "$deb" "$base/var/cache/tensord.deb"
  nspawn -D "$base" --pipe bash -c "apt-get update -qq && \
    apt-get install -y --no-install-recommends /var/cache/tensord.deb && apt-get remove -y tensord && \
    rm /var/cache/tensord.deb" >"$cache/deps.log" 2>&1 || { tail -30 "$cache/deps.log"; exit 1; }
  touch "$base/.complete"
fi

work=$(mktemp -d /var/tmp/tensord-nspawn.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
cp -a "$base" "$root"
mkdir -p "$work/results"
cp "$deb" "$root/var/cache/tensord.deb"
# dpkg alone when the cached base has the dependencies; apt (the mirror) when they changed.
if ! nspawn -D "$root" --pipe bash -c "dpkg -i /var/cache/tensord.deb || \
    (apt-get update -qq && apt-get install -y -f --no-install-recommends)" \
    >"$work/install.log" 2>&1; then
  tail -30 "$work/install.log"
  exit 1
fi

cat >"$root/usr/local/bin/tensord-selftest" <<'SELFTEST'
#!/bin/bash
# Runs at boot inside the container; writes its transcript to /results and powers off.
exec >/results/log 2>&1
set -x
sock=/run/tensord/tensord.sock
check() { local name=$1; shift; if "$@"; then echo "OK $name"; else echo "FAIL $name"; fi; }
check user id tensord
check not-enabled bash -c '! systemctl is-enabled --quiet tensord'
check not-started bash -c '! systemctl is-active --quiet tensord'
check start systemctl start tensord
check active systemctl is-active --quiet tensord
systemctl show -p Type,MainPID,StatusText,User tensord
check status-serving bash -c 'systemctl show -p StatusText tensord | grep -q "serving on unix:/run/tensord/tensord.sock"'
check socket-group bash -c "stat -c %G:%a $sock | grep -qx tensord:660"
check health tensorctl --socket $sock health
head -c 4194304 /dev/urandom >/tmp/a.bin
check put tensorctl --socket $sock put /tmp/a.bin k
check get tensorctl --socket $sock get k /tmp/b.bin
check roundtrip cmp /tmp/a.bin /tmp/b.bin
check segments bash -c 'ls /dev/shm | grep -q "^tensord\."'
check stats bash -c "tensorctl --socket $sock stats --json | grep -q '\"objects\": \"1\"'"
check top bash -c "tensorctl --socket $sock top --count 2 --interval-ms 200 | grep -q RATES"
# Change the configuration: a reloadable setting through SIGHUP ...
sed -i 's/^# log_level = "info"/log_level = "debug"/' /etc/tensord/tensord.toml
check reload systemctl reload tensord
sleep 0.5
check still-active systemctl is-active --quiet tensord
check still-serving tensorctl --socket $sock stat k
check reload-applied bash -c 'journalctl -u tensord --no-pager | grep -q "SIGHUP: daemon.log_level = \"debug\""'
# ... and one that needs a restart: the Prometheus endpoint.
sed -i 's/^# metrics_port = 0/metrics_port = 9464/' /etc/tensord/tensord.toml
check restart systemctl restart tensord
check metrics bash -c 'exec 3<>/dev/tcp/127.0.0.1/9464 && printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && grep -q "^tensord_tier_capacity_bytes{tier=\"host\"} 1073741824" <&3'
# A restart keeps the sealed tensor (warm restart: the segment is taken over).
check restart-keeps bash -c "tensorctl --socket $sock stats --json | grep -q '\"objects\": \"1\"'"
check restart-same-tensor tensorctl --socket $sock stat k
check stop systemctl stop tensord
systemctl show -p Result,ExecMainStatus,ExecMainCode tensord
check exit-clean bash -c 'systemctl show -p ExecMainStatus tensord | grep -q "=0$"'
check segments-kept bash -c 'ls /dev/shm | grep -q "^tensord\."'
# What it kept for the next start goes with --forget.
check forget bash -c 'install -d -o tensord -g tensord /run/tensord && runuser -u tensord -- tensord --run-dir /run/tensord --set daemon.state_dir=/var/lib/tensord --forget'
check segments-removed bash -c '! ls /dev/shm | grep -q "^tensord\."'
check socket-removed test ! -e $sock
journalctl -u tensord --no-pager | tail -20
echo SELFTEST-DONE
systemctl poweroff
SELFTEST
chmod 755 "$root/usr/local/bin/tensord-selftest"
cat >"$root/etc/systemd/system/tensord-selftest.service" <<'UNIT'
[Unit]
Description=tensord self-test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/bin/tensord-selftest
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/tensord-selftest.service \
  "$root/etc/systemd/system/multi-user.target.wants/tensord-selftest.service"

timeout 300 systemd-nspawn -q --register=no --keep-unit -D "$root" --boot \
  --bind="$work/results:/results" >"$work/boot.log" 2>&1 || true
if [[ ! -f $work/results/log ]]; then
  echo "nspawn_test: the container wrote no transcript"; tail -40 "$work/boot.log"; exit 1
fi
grep -E "^(OK|FAIL) " "$work/results/log"
if grep -q "^FAIL " "$work/results/log" || ! grep -q SELFTEST-DONE "$work/results/log"; then
  echo "---- transcript"; cat "$work/results/log"
  exit 1
fi
echo "nspawn_test: all checks passed under systemd"
