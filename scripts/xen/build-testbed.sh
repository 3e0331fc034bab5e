#!/usr/bin/env bash
# Builds (or finds in the cache) the parts of the Xen testbed that do not
# change with the project: Xen, the kernel and the modules each domain needs,
# a debootstrap dom0 with the toolstack, and a busybox domU base with Node and
# the Xen userspace libraries. Everything comes from Debian packages.
#
# The cache lives outside the repository, keyed by the package versions (and
# the Node binary), so a new Debian point release or Node rebuilds it:
#   $XEN_TESTBED_CACHE (default /var/cache/xen-blkfront-testbed)/<key>/
#     xen            the hypervisor, an ELF multiboot image QEMU loads with -kernel
#     vmlinuz        Debian's kernel, for dom0 and the domU
#     dom0.cpio.gz   dom0's root: debootstrap minbase + xen-utils + its modules, and
#                    QEMU's Xen build (qemu-system-xen, with qemu-system-data's keymaps),
#                    which libxl starts as the backend of a backendtype=qdisk vbd; and node
#     domU.cpio.gz   the domU's base: busybox, modules, node, libxen*, coreutils dd
# Prints the directory on stdout; everything else goes to stderr.
set -euo pipefail

cache_root=${XEN_TESTBED_CACHE:-/var/cache/xen-blkfront-testbed}
log() { echo "testbed: $*" >&2; }

# Resolve the exact versions first: they name the cache entry.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$kpkg" ] || { log "cannot resolve linux-image-amd64 (is apt's package list there? run apt-get update)"; exit 1; }
kver=${kpkg#linux-image-}
version_of() { apt-cache policy "$1" | awk '/Candidate:/ { print $2; exit }'; }
pkgs=(xen-hypervisor-4.17-amd64 "$kpkg" xen-utils-4.17 busybox-static coreutils qemu-system-xen qemu-system-data)
versions=""
for p in "${pkgs[@]}"; do
  v=$(version_of "$p")
  [ -n "$v" ] && [ "$v" != "(none)" ] || { log "no candidate version for $p"; exit 1; }
  versions+="$p=$v "
done
node_id="node $(node -v) $(stat -c %s /usr/bin/node)"
layout_rev=6   # bump when this script's output changes shape
key=$(printf '%s\n' "$versions" "$node_id" "rev $layout_rev" | sha256sum | cut -c1-16)
dir="$cache_root/$key"
if [ -f "$dir/complete" ]; then
  log "cached: $dir ($versions)"
  echo "$dir"
  exit 0
fi

log "building $dir ($versions; $node_id)"
rm -rf "$dir"
mkdir -p "$dir"
work=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- Debian packages, unpacked without installing -------------------------
mkdir -p "$work/debs"
( cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root xen-hypervisor-4.17-amd64 "$kpkg" busybox-static >&2 )
for d in "$work"/debs/*.deb; do dpkg -x "$d" "$work/pkgroot"; done
zcat "$(ls "$work"/pkgroot/boot/xen-4.17*-amd64.gz | head -n1)" > "$dir/xen"
cp "$work/pkgroot/boot/vmlinuz-$kver" "$dir/vmlinuz"
moddir="$work/pkgroot/lib/modules/$kver"
depmod -b "$work/pkgroot" "$kver"   # the .deb leaves modules.dep to its postinst

# Copies the named modules and everything they depend on (per modules.dep)
# into ROOT, decompressed so busybox's modprobe can load them, and runs depmod.
install_modules() {
  local root=$1; shift
  local todo=("$@") seen=" " m rel deps
  mkdir -p "$root/lib/modules/$kver"
  while [ ${#todo[@]} -gt 0 ]; do
    m=${todo[0]}; todo=("${todo[@]:1}")
    rel=$(awk -F: -v m="$m" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", n); gsub(/-/, "_", n); mm = m; gsub(/-/, "_", mm); if (n == mm) { print $1; exit } }' "$moddir/modules.dep")
    if [ -z "$rel" ]; then
      grep -qE "/${m//-/[-_]}\.ko" "$moddir/modules.builtin" || { log "module $m: not found"; exit 1; }
      continue   # built into the kernel
    fi
    case "$seen" in *" $rel "*) continue ;; esac
    seen+="$rel "
    mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
    case "$rel" in
      *.xz) xz -dc "$moddir/$rel" > "$root/lib/modules/$kver/${rel%.xz}" ;;
      *.zst) zstd -qdc "$moddir/$rel" > "$root/lib/modules/$kver/${rel%.zst}" ;;
      *) cp "$moddir/$rel" "$root/lib/modules/$kver/$rel" ;;
    esac
    deps=$(awk -F: -v r="$rel" '$1 == r { print $2; exit }' "$moddir/modules.dep")
    for dep in $deps; do
      dep=${dep##*/}; dep=${dep%%.ko*}; todo+=("$dep")
    done
  done
  cp "$moddir"/modules.builtin* "$moddir/modules.order" "$root/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$root" "$kver"
}

# Copies each file into the root ROOT with the shared objects ldd says it needs.
copy_with_libs() {
  local root=$1 f lib; shift
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    for lib in $(ldd "$f" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'); do
      [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
  done
}

# --- dom0: debootstrap minbase with the toolstack ------------------------
log "debootstrap dom0 (about a minute)"
mirror=$(awk '/^deb / && /debian/ { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
debootstrap --variant=minbase \
  --include=xen-utils-4.17,xenstore-utils,busybox,kmod,util-linux,iproute2,procps,qemu-system-xen,qemu-system-data,e2fsprogs,gdisk \
  bookworm "$work/dom0" ${mirror:+"$mirror"} >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
install_modules "$work/dom0" xen-evtchn xen-gntalloc xen-gntdev xen-privcmd xenfs xen-blkback loop crc32c_generic ext4
# Node, for the xenstore client's benchmark against the C xenstored over its socket.
copy_with_libs "$work/dom0" /usr/bin/node
rm -rf "$work/dom0"/var/cache/apt/archives/*.deb "$work/dom0"/usr/share/doc "$work/dom0"/usr/share/man \
  "$work/dom0"/usr/share/locale "$work/dom0"/usr/share/info
( cd "$work/dom0" && find . -xdev | cpio -o -H newc --quiet ) | gzip -1 > "$dir/dom0.cpio.gz"

# --- domU base: busybox, modules, node, the Xen libraries ----------------
log "domU base"
u="$work/domU"
mkdir -p "$u"/{bin,sbin,proc,sys,dev,tmp,run,lib64,lib/x86_64-linux-gnu,usr/bin}
cp "$work/pkgroot/bin/busybox" "$u/bin/busybox"
for a in $("$u/bin/busybox" --list); do [ -e "$u/bin/$a" ] || ln -s busybox "$u/bin/$a"; done
install_modules "$u" xen-evtchn xen-gntalloc xen-gntdev xen-blkfront
# Node, coreutils' dd (for O_DIRECT on the kernel driver's disk) and the Xen
# userspace libraries, each with the shared objects ldd says it needs.
xl=/usr/lib/x86_64-linux-gnu
copy_with_libs "$u" /usr/bin/node /usr/bin/dd /usr/bin/sha256sum \
  $xl/libxengnttab.so.1 $xl/libxenevtchn.so.1 $xl/libxentoolcore.so.1 $xl/libxentoollog.so.1
( cd "$u" && find . | cpio -o -H newc --quiet ) | gzip -1 > "$dir/domU.cpio.gz"

printf '%s\n' "$versions" "$node_id" > "$dir/versions"
touch "$dir/complete"
log "built $dir ($(du -sh "$dir" | cut -f1))"
echo "$dir"
