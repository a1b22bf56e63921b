#!/usr/bin/env bash
# Debian packages the tests and benchmarks run for real: nginx (a mirror of the bundle),
# rsync (the documented mirror copy), h2load (HTTP/2 load), tmux (the live view read as a terminal), curl, and Prometheus
# with promtool (a real scrape, the alerting rules' tests), PostgreSQL (the stores' tests
# run against a real server started in a temporary directory), and Patroni with etcd (the
# highly available PostgreSQL of the multi-host cluster, docs/adr/0093).
#
# Installs what is missing when run as root on a machine with apt-get; otherwise lists
# what to install and exits 0, so that `make dev` works for anyone (the tests that need a
# missing program then fail and name it).
set -euo pipefail

# program -> Debian package
declare -A PACKAGES=(
  [nginx]=nginx
  [rsync]=rsync
  [h2load]=nghttp2-client
  [tmux]=tmux
  [curl]=curl
  [prometheus]=prometheus
  [promtool]=prometheus
  [patroni]=patroni
  [etcd]=etcd-server
)
# Debian keeps the PostgreSQL server's programs off PATH, under its major version.
POSTGRESQL_INITDB=(/usr/lib/postgresql/*/bin/initdb)

missing=()
for program in "${!PACKAGES[@]}"; do
  if ! command -v "$program" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$program" ]; then
    missing+=("${PACKAGES[$program]}")
  fi
done
if [ ! -x "${POSTGRESQL_INITDB[0]}" ]; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system packages missing (install them to run every test): ${missing[*]}" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the programs only, no daemons' extras.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the services it installs; the tests start their own instances.
for service in nginx prometheus postgresql etcd patroni; do
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
# Without systemd, the postgresql package may have started its default cluster.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version name _ status _; do
    if [ "$status" = "online" ]; then
      pg_ctlcluster "$version" "$name" stop || true
    fi
  done
fi
pkill -x prometheus 2>/dev/null || true
