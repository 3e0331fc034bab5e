#!/bin/bash
# dom0's /init in the Xen testbed: brings up the toolstack, makes the backing
# files, starts the PV domU that runs the Xen suite, serves the suite's
# requests (checksums of a backing file, detaching a vbd, a file-system disk
# plugged in and checked afterwards), streams the domU's
# console, and powers the machine off. Every line meant for the host starts
# with "dom0|" or "domU|"; the verdict is one "XEN-TESTBED-RESULT" line.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-4.17/bin
say() { echo "dom0| $*"; }
finish() {
  say "$1"
  echo "XEN-TESTBED-RESULT $2"
  sync
  busybox reboot -f
  sleep 60
}
trap 'finish "init failed at line $LINENO" error' ERR
set -eE

exec 3>&1   # the console, for background jobs started inside $(...)
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
# Room for the backing files and for the domU's save file (xl save writes its memory).
mount -t tmpfs -o size=1200m tmpfs /tmp
# Without /dev/stdin the block hotplug script's lock busy-waits for ever.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/xen /run/xenstored /run/lock /var/log/xen/console /var/lib/xen /var/lib/xenstored
. /testbed/config   # TIMEOUT, MARKER, DISK_MB, RO_MB, KDISK_MB

for m in xen-evtchn xen-gntalloc xen-gntdev xen-privcmd xenfs xen-blkback loop crc32c_generic ext4; do modprobe "$m"; done
mount -t xenfs xenfs /proc/xen

xenstored --pid-file /run/xenstored.pid
for _ in $(seq 100); do [ -S /run/xenstored/socket ] && break; sleep 0.1; done
xen-init-dom0 >/dev/null
xenconsoled --log=guest --log-dir=/var/log/xen/console
say "toolstack up at $(cut -d' ' -f1 /proc/uptime)s"

# The xenstore client against the C xenstored, from dom0 over its socket, before the domU exists.
if out=$(node /opt/xen-blkfront/dist/bench/xenstore.js --socket /run/xenstored/socket --base /bench --ops 1000 --summary 2>&1); then
  say "# xen-bench xenstore from dom0 over its socket, C xenstored: $out"
else
  say "xenstore benchmark from dom0 failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
fi

# Backing files. The read-write ones the suite compares (the driver's and the
# kernel's, on blkback and on qdisk) all start as the same random bytes, with no
# holes: a hole in tmpfs reads as a shared zero page, faster than data, and
# only the side that wrote first would pay for real pages. The marker lets the
# domU prove it reads dom0's data at both ends of its disk.
head -c "${KDISK_MB}M" /dev/urandom > /tmp/kdisk.img
head -c "${DISK_MB}M" /tmp/kdisk.img > /tmp/disk.img
truncate -s "${DISK_MB}M" /tmp/disk.img
truncate -s "${RO_MB}M" /tmp/ro.img
# Twins served by QEMU's qdisk backend (libxl starts QEMU for them): one for the driver, one for the kernel's.
# The kernel's driver at its module defaults, for the reference row (a module's parameters hold for all it drives).
cp /tmp/kdisk.img /tmp/kdisk0.img
cp /tmp/kdisk.img /tmp/qdisk.img
cp /tmp/kdisk.img /tmp/kqdisk.img
# Each marker fills its sector, zeros after the text.
sector() { { printf "$@"; head -c 512 /dev/zero; } | head -c 512; }
sector 'XEN-BLKFRONT-MARKER %s head' "$MARKER" | dd of=/tmp/disk.img conv=notrunc status=none
sector 'XEN-BLKFRONT-MARKER %s tail' "$MARKER" |
  dd of=/tmp/disk.img bs=512 seek=$((DISK_MB * 2048 - 1)) conv=notrunc status=none
printf 'XEN-BLKFRONT-MARKER %s ro' "$MARKER" | dd of=/tmp/ro.img conv=notrunc status=none

cat > /tmp/domU.cfg <<CFG
name = "suite"
type = "pv"
kernel = "/testbed/vmlinuz"
ramdisk = "/testbed/domU.cpio.gz"
extra = "console=hvc0 quiet marker=$MARKER $DOMU_ARGS"
memory = 640
vcpus = 2
vif = []
on_poweroff = "destroy"
on_crash = "destroy"
disk = [ 'format=raw, vdev=xvdb, access=rw, backendtype=phy, target=/tmp/disk.img',
         'format=raw, vdev=xvdc, access=ro, backendtype=phy, target=/tmp/ro.img',
         'format=raw, vdev=xvdd, access=rw, backendtype=phy, target=/tmp/kdisk.img',
         'format=raw, vdev=xvde, access=rw, backendtype=qdisk, target=/tmp/qdisk.img',
         'format=raw, vdev=xvdf, access=rw, backendtype=qdisk, target=/tmp/kqdisk.img',
         'format=raw, vdev=xvdh, access=rw, backendtype=phy, target=/tmp/kdisk0.img' ]
CFG
xl create /tmp/domU.cfg >/tmp/xl-create.log 2>&1 || { cat /tmp/xl-create.log; finish "xl create failed" error; }
domid=$(xl domid suite)
say "domU $domid created at $(cut -d' ' -f1 /proc/uptime)s"
data=/local/domain/$domid/data

# The domU's console, live, line by line.
log=/var/log/xen/console/guest-suite.log
for _ in $(seq 50); do [ -e "$log" ] && break; sleep 0.1; done
tail -n +1 -F "$log" 2>/dev/null | sed -u 's/^/domU| /' &
tailer=$!

# Requests from the suite: data/request = "<n> <command> <args>", answered in
# data/response = "<n> <answer>". Only these commands exist.
serve() {
  local n=$1 cmd=$2 a1=${3:-} a2=${4:-} file
  case "$a1" in
    xvdb) file=/tmp/disk.img ;; xvdc) file=/tmp/ro.img ;; xvdd) file=/tmp/kdisk.img ;;
    xvde) file=/tmp/qdisk.img ;; xvdf) file=/tmp/kqdisk.img ;; xvdg) file=/tmp/files.img ;; xvdi) file=/tmp/dirty.img ;; *) file= ;;
  esac
  case "$cmd" in
    checksum)   # the backing file's sha256, as dom0 sees it
      [ -n "$file" ] || { echo "$n error unknown vdev $a1"; return; }
      sync; echo "$n $(sha256sum "$file" | cut -d' ' -f1)" ;;
    saverestore)  # xl save then xl restore, as a live migration does it: the suite is frozen meanwhile.
                  # "keep": xl save -D, so the domain comes back with the same id.
      local t0 keep=(); t0=$(cut -d' ' -f1 /proc/uptime)
      [ "$a1" = keep ] && keep=(-D)
      if ! xl save "${keep[@]}" suite /tmp/suite.save >/tmp/save.log 2>&1; then echo "$n error xl save: $(tr '\n' ' ' </tmp/save.log)"; return; fi
      local t1; t1=$(cut -d' ' -f1 /proc/uptime)
      # The saved domain is destroyed asynchronously: a restore that wants its id back may have to wait for it.
      local try
      for try in $(seq 40); do
        LIBXL_DOMID_REUSE_TIMEOUT=0 xl restore /tmp/suite.save >/tmp/restore.log 2>&1 && break
        say "xl restore (try $try) failed: $(tr '\n' ' ' </tmp/restore.log)" >&3
        if [ "$try" = 40 ]; then echo "$n error xl restore: $(tr '\n' ' ' </tmp/restore.log)"; return; fi
        sleep 2
      done
      rm -f /tmp/suite.save
      say "xl save from ${t0}s to ${t1}s; restored as domain $(xl domid suite) at $(cut -d' ' -f1 /proc/uptime)s" >&3
      echo "$n restored $(xl domid suite)" ;;
    files-attach)  # a GPT disk whose partition 1 is ext4 made by mkfs.ext4 -d, plugged in as xvdg while the suite runs
      rm -rf /tmp/tree && mkdir -p /tmp/tree/docs/deeper/still /tmp/tree/empty-dir
      head -c 3000001 /dev/urandom > /tmp/tree/large.bin
      head -c 4096 /dev/urandom > /tmp/tree/docs/block.bin
      echo "made in dom0 by mkfs.ext4 -d" > /tmp/tree/docs/deeper/still/note.txt
      printf 'x' > "/tmp/tree/docs/$(printf 'n%.0s' $(seq 200)).txt"
      truncate -s 8M /tmp/tree/sparse.bin && echo tail >> /tmp/tree/sparse.bin
      truncate -s 48M /tmp/files.img
      if ! { sgdisk -n 1:2048:+40M -t 1:8300 -c 1:files /tmp/files.img &&
             mkfs.ext4 -q -F -b 4096 -L files -E offset=1048576 -d /tmp/tree /tmp/files.img 40M; } >/tmp/files.log 2>&1; then
        echo "$n error making the image: $(tr '\n' ' ' </tmp/files.log)"; return
      fi
      if ! xl block-attach suite 'format=raw, vdev=xvdg, access=rw, backendtype=phy, target=/tmp/files.img' >/tmp/attach.log 2>&1; then
        echo "$n error xl block-attach: $(tr '\n' ' ' </tmp/attach.log)"; return
      fi
      say "xl block-attach xvdg: GPT, partition 1 ext4 from mkfs.ext4 -d" >&3
      echo "$n $(cd /tmp/tree && find . -type f | sort | while read -r f; do printf '%s=%s ' "${f#.}" "$(sha256sum "$f" | cut -c1-64)"; done)" ;;
    files-check)   # after the detach: e2fsck -fn, the file the domU wrote as debugfs reads it, and every file as the kernel's ext4 reads it
      local rc=0
      e2fsck -fn '/tmp/files.img?offset=1048576' >/tmp/fsck.log 2>&1 || rc=$?
      [ "$rc" = 0 ] || say "e2fsck: $(tr '\n' ' ' </tmp/fsck.log)" >&3
      local new; new=$(debugfs -R "cat $a1" '/tmp/files.img?offset=1048576' 2>/dev/null | sha256sum | cut -c1-64)
      mkdir -p /mnt/files
      if ! mount -t ext4 -o ro,loop,offset=1048576 /tmp/files.img /mnt/files >/tmp/mount.log 2>&1; then
        echo "$n fsck=$rc new=$new error mount: $(tr '\n' ' ' </tmp/mount.log)"; return
      fi
      local files; files=$(cd /mnt/files && find . -type f | sort | while read -r f; do printf '%s=%s ' "${f#.}" "$(sha256sum "$f" | cut -c1-64)"; done)
      umount /mnt/files
      echo "$n fsck=$rc new=$new kernel $files" ;;
    dirty-attach)  # ext4 mounted by dom0's kernel, written, and copied without an unmount (a journal needing recovery), plugged in as xvdi
      rm -f /tmp/dirty.img /tmp/dirty-src.img && truncate -s 24M /tmp/dirty-src.img && mkdir -p /mnt/dirty
      if ! { mkfs.ext4 -q -F -L dirty /tmp/dirty-src.img && mount -t ext4 -o loop /tmp/dirty-src.img /mnt/dirty &&
             head -c 200000 /dev/urandom > /mnt/dirty/written-while-mounted.bin && mkdir /mnt/dirty/dir && sync &&
             cp --sparse=always /tmp/dirty-src.img /tmp/dirty.img && umount /mnt/dirty; } >/tmp/dirty.log 2>&1; then
        umount /mnt/dirty 2>/dev/null; echo "$n error making the image: $(tr '\n' ' ' </tmp/dirty.log)"; return
      fi
      local feat; feat=$(dumpe2fs -h /tmp/dirty.img 2>/dev/null | grep -c needs_recovery || true)
      if ! xl block-attach suite 'format=raw, vdev=xvdi, access=rw, backendtype=phy, target=/tmp/dirty.img' >/tmp/attach.log 2>&1; then
        echo "$n error xl block-attach: $(tr '\n' ' ' </tmp/attach.log)"; return
      fi
      say "xl block-attach xvdi: ext4 copied while dom0's kernel had it mounted (needs_recovery lines: $feat)" >&3
      echo "$n needs_recovery=$feat" ;;
    scratch-attach)  # two scratch vbds for blkcheck --hostile: xvdj on xen-blkback, xvdk on QEMU's qdisk
      truncate -s 64M /tmp/scratch.img /tmp/qscratch.img
      if ! { xl block-attach suite 'format=raw, vdev=xvdj, access=rw, backendtype=phy, target=/tmp/scratch.img' &&
             xl block-attach suite 'format=raw, vdev=xvdk, access=rw, backendtype=qdisk, target=/tmp/qscratch.img'; } >/tmp/attach.log 2>&1; then
        echo "$n error xl block-attach: $(tr '\n' ' ' </tmp/attach.log)"; return
      fi
      say "xl block-attach xvdj (blkback) and xvdk (qdisk): scratch for blkcheck" >&3
      echo "$n attached $(dmesg | wc -l)" ;;
    dmesg-since)  # dom0's kernel log after line $a1: oops, BUG and WARN lines counted, blkback's own lines quoted
      local since=${a1:-0} lines
      lines=$(dmesg | tail -n +"$((since + 1))")
      echo "$n bad=$(printf '%s\n' "$lines" | grep -ciE 'oops|BUG:|WARNING:|Call Trace|general protection' || true) blkback=$(printf '%s\n' "$lines" | grep -iE 'blkback|blkif' | tail -n 8 | tr '\n' '|')" ;;
    detach)     # xl block-detach, in the background: it waits for the frontend
      ( if xl block-detach suite "$a1" >/tmp/detach.log 2>&1; then
          say "xl block-detach $a1: done"; else say "xl block-detach $a1: failed: $(tr '\n' ' ' </tmp/detach.log)"; fi ) >&3 2>&3 &
      echo "$n started" ;;
    *) echo "$n error unknown command $cmd" ;;
  esac
}
last=
deadline=$(( $(cut -d. -f1 /proc/uptime) + TIMEOUT ))
while domid=$(xl domid suite 2>/dev/null); do
  data=/local/domain/$domid/data   # a restore gives the domain a new id
  if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ]; then
    xl destroy suite || true
    sleep 1; kill "$tailer" 2>/dev/null || true
    finish "domU still running after ${TIMEOUT}s: destroyed" timeout
  fi
  req=$(xenstore-read "$data/request" 2>/dev/null || true)
  if [ -n "$req" ] && [ "${req%% *}" != "$last" ]; then
    last=${req%% *}
    # shellcheck disable=SC2086
    answer=$(serve $req)
    # After a save/restore the domain answers under its new id.
    domid=$(xl domid suite 2>/dev/null) && data=/local/domain/$domid/data
    xenstore-write "$data/response" "$answer"
  fi
  sleep 0.2
done
sleep 1
kill "$tailer" 2>/dev/null || true
say "domU gone at $(cut -d' ' -f1 /proc/uptime)s"
status=$(grep -ao 'XEN-SUITE-EXIT [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
case "$status" in
  0) finish "suite passed" pass ;;
  '') finish "the domU ended without a verdict" error ;;
  *) finish "suite failed (exit $status)" fail ;;
esac
