#!/usr/bin/env bash
# Installs the peers used by the interop suite:
#  - client tools, namespace tooling and helpers as regular packages
#    (curl, lftp, nftables, iproute2, python3, haproxy; openssl and
#    db5.3-util make the servers' password files);
#  - the FTP servers (vsftpd, pure-ftpd, proftpd) are only downloaded and
#    unpacked into interop/.peers/<name>/ with dpkg -x, never installed,
#    proftpd with proftpd-mod-crypto for mod_tls,
#    because installing a server package would start a system daemon on
#    port 21. Shared libraries the unpacked servers need that are not on
#    the machine are installed as library packages.
# Idempotent: re-running it skips whatever is already present.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
peers="$here/.peers"
mkdir -p "$peers"
export DEBIAN_FRONTEND=noninteractive

updated=0
apt_update_once() {
  if [ "$updated" = 0 ]; then
    apt-get update -qq
    updated=1
  fi
}

client_pkgs=(curl lftp nftables iproute2 python3 haproxy openssl db5.3-util)
missing=()
for p in "${client_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    apt_update_once
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# server name -> package(s) to unpack; binary path inside the unpacked tree
declare -A server_pkgs=(
  [vsftpd]="vsftpd"
  [pure-ftpd]="pure-ftpd pure-ftpd-common"
  [proftpd]="proftpd-core"
)
declare -A server_bin=(
  [vsftpd]="usr/sbin/vsftpd"
  [pure-ftpd]="usr/sbin/pure-ftpd"
  [proftpd]="usr/sbin/proftpd"
)

dl="$peers/.debs"
mkdir -p "$dl"
for name in vsftpd pure-ftpd proftpd; do
  dest="$peers/$name"
  if [ -x "$dest/${server_bin[$name]}" ]; then
    continue
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  for pkg in ${server_pkgs[$name]}; do
    (
      cd "$dl"
      if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
        if ! apt-get download -qq "$pkg"; then
          apt_update_once
          apt-get download -qq "$pkg"
        fi
      fi
    )
    for deb in "$dl/${pkg}"_*.deb; do
      dpkg -x "$deb" "$dest"
    done
  done
done

# Packages unpacked into a server's tree beside its main ones, each with a
# file it provides, so that a tree unpacked before they were listed gets
# them too: proftpd's mod_tls (FTPS) lives in proftpd-mod-crypto.
declare -A server_extra=(
  [proftpd]="proftpd-mod-crypto:usr/lib/proftpd/mod_tls.so"
)
for name in "${!server_extra[@]}"; do
  for entry in ${server_extra[$name]}; do
    pkg="${entry%%:*}"
    file="${entry#*:}"
    if [ -e "$peers/$name/$file" ]; then
      continue
    fi
    (
      cd "$dl"
      if ! ls "${pkg}"_*.deb >/dev/null 2>&1; then
        if ! apt-get download -qq "$pkg"; then
          apt_update_once
          apt-get download -qq "$pkg"
        fi
      fi
    )
    for deb in "$dl/${pkg}"_*.deb; do
      dpkg -x "$deb" "$peers/$name"
    done
  done
done

# Libraries the unpacked binaries need but the machine lacks: find the
# owning library package by name with apt-file-less heuristics (dpkg -S on
# nothing works for missing files), so map the known sonames explicitly and
# fall back to apt-cache search on the soname.
declare -A lib_pkg=(
  [libwrap.so.0]=libwrap0
  [libsodium.so.23]=libsodium23
  [libmemcached.so.11]=libmemcached11
  [libcap.so.2]=libcap2
  [libssl.so.3]=libssl3
  [libcrypto.so.3]=libssl3
  [libpam.so.0]=libpam0g
  [libmd.so.0]=libmd0
  [libsasl2.so.2]=libsasl2-2
  [libldap-2.5.so.0]=libldap-2.5-0
  [liblber-2.5.so.0]=libldap-2.5-0
  [libpcre2-8.so.0]=libpcre2-8-0
  [libpcre2-posix.so.3]=libpcre2-posix3
)
# The server binaries, and the extra modules they load.
declare -A server_objs=(
  [vsftpd]="usr/sbin/vsftpd"
  [pure-ftpd]="usr/sbin/pure-ftpd"
  [proftpd]="usr/sbin/proftpd usr/lib/proftpd/mod_tls.so"
)
for name in vsftpd pure-ftpd proftpd; do
  for obj in ${server_objs[$name]}; do
    bin="$peers/$name/$obj"
    for so in $(ldd "$bin" 2>/dev/null | awk '/not found/ {print $1}'); do
      pkg="${lib_pkg[$so]:-}"
      if [ -z "$pkg" ]; then
        apt_update_once
        pkg="$(apt-cache search --names-only "^$(echo "$so" | sed 's/\.so\./ /; s/ .*//')" | awk '{print $1}' | head -n1)"
      fi
      if [ -z "$pkg" ]; then
        echo "install-peers: no package found for $so needed by $name" >&2
        exit 1
      fi
      if ! apt-get install -y -qq --no-install-recommends "$pkg"; then
        apt_update_once
        apt-get install -y -qq --no-install-recommends "$pkg"
      fi
    done
    if ldd "$bin" | grep -q "not found"; then
      echo "install-peers: $name ($obj) still misses libraries:" >&2
      ldd "$bin" | grep "not found" >&2
      exit 1
    fi
  done
done

echo "peers:"
for name in vsftpd pure-ftpd proftpd; do
  v="$(dpkg-deb -f "$(ls "$dl/${server_pkgs[$name]%% *}"_*.deb | head -n1)" Version)"
  echo "  $name $v ($peers/$name/${server_bin[$name]})"
done
echo "  curl $(curl --version | head -n1 | awk '{print $2}')"
echo "  lftp $(lftp --version | head -n1 | sed 's/.*Version \([^ ]*\).*/\1/')"
echo "  python3 $(python3 -c 'import sys; print(sys.version.split()[0])')"
echo "  nft $(nft --version | awk '{print $2}')"
echo "  haproxy $(haproxy -v | head -n1 | awk '{print $3}')"
