#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, when they are missing:
#   gcc + libxen-dev   the C layout probe, compiled against Xen's own headers
#   libext2fs-dev      the ext superblock's layout, checked against e2fsprogs' ext2_fs.h
#   gcc-multilib       the layout checks compiled -m32 (compile-only), for the x86_32 blkif ABI
#   xenstore-utils     Debian's xenstore tools, run against our xenstored
#   e2fsprogs, fdisk, gdisk   file-system images made and checked by the real
#                      tools (mkfs.ext4 -d, e2fsck, debugfs, sfdisk, sgdisk)
# and, for npm run test:xen (a real Xen under QEMU, scripts/xen):
#   qemu-system-x86    the emulated machine
#   debootstrap, cpio  dom0's root and both domains' initramfs
#   kmod, xz-utils     the modules each domain needs, decompressed and indexed
set -euo pipefail

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/include/xen/io/blkif.h ] || need+=(libxen-dev)
[ -f /usr/include/ext2fs/ext2_fs.h ] || need+=(libext2fs-dev)
command -v xenstore-write >/dev/null 2>&1 || need+=(xenstore-utils)
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || need+=(e2fsprogs)
command -v sfdisk >/dev/null 2>&1 || [ -x /usr/sbin/sfdisk ] || need+=(fdisk)
command -v sgdisk >/dev/null 2>&1 || [ -x /usr/sbin/sgdisk ] || need+=(gdisk)
if ! printf '#include <stdint.h>\nint x;\n' | gcc -m32 -fsyntax-only -x c - >/dev/null 2>&1; then
  need+=(gcc-multilib)
fi

command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v depmod >/dev/null 2>&1 || [ -x /usr/sbin/depmod ] || need+=(kmod)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)

if [ ${#need[@]} -eq 0 ]; then
  echo "test-deps: gcc, libxen-dev, libext2fs-dev, gcc-multilib, xenstore-utils, e2fsprogs, fdisk, gdisk and the Xen testbed's tools are present"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "test-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "test-deps: installing ${need[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
