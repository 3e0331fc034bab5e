#!/bin/sh
# The domU's /init in the Xen testbed: loads the modules a userspace frontend
# needs (but not xen-blkfront: the suite's disks are the driver's), runs the
# Xen suite as root, prints its exit status and powers off.
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
for m in xen-evtchn xen-gntalloc xen-gntdev; do modprobe "$m" || echo "modprobe $m failed"; done
echo "domU userspace up at $(cut -d' ' -f1 /proc/uptime)s"
cd /opt/xen-blkfront
NODE_DISABLE_COLORS=1 XEN_SUITE_ONLY=$(sed -n 's/.*suite=\([^ ]*\).*/\1/p' /proc/cmdline) \
  XEN_BENCH_ONLY=$(sed -n 's/.*bench=\([^ ]*\).*/\1/p' /proc/cmdline) \
  XEN_SUITE_MARKER=$(sed -n 's/.*marker=\([^ ]*\).*/\1/p' /proc/cmdline) \
  node --test-reporter=tap dist/test/xen/suite.js 2>&1
echo "XEN-SUITE-EXIT $?"
sync
poweroff -f
