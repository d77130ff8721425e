#!/usr/bin/env bash
# Runs a real vsftpd on 127.0.0.1:2100 with an anonymous, writable area and
# ftpproxy in front of it on 127.0.0.1:2121, then waits until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
vsftpd=interop/.peers/vsftpd/usr/sbin/vsftpd
[ -x "$vsftpd" ] || { echo "vsftpd not unpacked: run 'make peers'" >&2; exit 1; }

work=$(mktemp -d /tmp/ftpproxy-demo.XXXXXX)
mkdir -p "$work/root/pub" "$work/empty"
chmod 555 "$work/root"
chown daemon "$work/root/pub"
echo "hello through ftpproxy" > "$work/root/pub/hello.txt"
head -c 16777216 /dev/urandom > "$work/root/pub/16MiB.bin"
cat > "$work/vsftpd.conf" <<CONF
listen=YES
listen_address=127.0.0.1
listen_port=2100
background=NO
anonymous_enable=YES
anon_root=$work/root
no_anon_password=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_umask=022
write_enable=YES
local_enable=NO
ftp_username=daemon
seccomp_sandbox=NO
secure_chroot_dir=$work/empty
pasv_min_port=22000
pasv_max_port=22099
CONF

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 2100 2121; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: 127.0.0.1:$port is already in use; stop what listens there first" >&2
    exit 1
  fi
done

"$vsftpd" "$work/vsftpd.conf" & pids+=($!)
# Wait for vsftpd's greeting before putting the proxy in front of it.
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/2100) 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "demo: vsftpd did not start" >&2; exit 1; }
  sleep 0.1
done
bin/ftpproxy --listen 127.0.0.1:2121 --upstream 127.0.0.1:2100 \
  --passive-ports 21000-21099 --log-format console & pids+=($!)

cat <<MSG

vsftpd serves $work/root on 127.0.0.1:2100; ftpproxy relays it on 127.0.0.1:2121.
Try, in another terminal:
  curl ftp://127.0.0.1:2121/pub/                                # list (EPSV)
  curl -o /tmp/16MiB.bin ftp://127.0.0.1:2121/pub/16MiB.bin     # download, passive
  curl -P - -o /tmp/16MiB.bin ftp://127.0.0.1:2121/pub/16MiB.bin # download, active (EPRT)
  curl -T /etc/os-release ftp://127.0.0.1:2121/pub/             # upload
  lftp -p 2121 127.0.0.1                                        # interactive
Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
