#!/usr/bin/env bash
# Builds the tiny Linux guest the tests boot: Debian's cloud kernel plus a busybox initramfs whose
# /init is Tests/guest/init. Nothing is installed on the host: the two packages are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x`; the initramfs is made by the downloaded
# busybox's own cpio applet.
#
# Output (cached): <cache>/<key>/vmlinuz and <cache>/<key>/initrd.img, where <cache> is
# $MAQET_GUEST_CACHE if set, else <repo>/.build/guest, and <key> names the kernel package and
# version, the busybox version and a hash of this script and the files it packs. A run that finds
# its key already built does nothing. The last two lines of stdout are always
#   kernel=/abs/path/vmlinuz
#   initrd=/abs/path/initrd.img
# Everything else goes to stderr. Exit status 0 when both files are there, 1 otherwise.
#
# Boot it with (TCG; the guest never needs KVM):
#   qemu-system-x86_64 -machine q35 -accel tcg -m 256 -kernel K -initrd I \
#     -append 'console=ttyS0 panic=-1 quiet' -nographic
# Markers on ttyS0, cmdline switches and what the guest does: see Tests/guest/init.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MAQET_GUEST_CACHE:-$repo/.build/guest}
# Kernel modules the guest loads (their dependencies are added from each module's modinfo).
modules=(button evdev virtio_pci virtio_blk virtio_net pvpanic-mmio pvpanic-pci)
# Everything that ends up in the initramfs besides the two packages.
inputs=("$here/build.sh" "$here/init" "$here/powerbutton")

say() { echo "guest: $*" >&2; }
die() { echo "guest: $*" >&2; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
lists_updated=0
update_lists() {
    [ "$lists_updated" -eq 0 ] || return 1
    lists_updated=1
    say "apt lists are missing or stale; running apt-get update"
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
}

# The versions apt would download: "<image package> <its version> <busybox-static version>".
# apt-cache re-reads every list on each call where its cache is off (Debian's docker images), so
# the answer is kept in $cache/resolved next to a fingerprint of the lists, and asked again only
# when the lists change.
lists_fingerprint() {
    stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null | sha256sum | cut -c1-16
}
ask_apt() {
    local image versions
    image=$(apt-cache depends --important linux-image-cloud-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
    [ -n "$image" ] || return 1
    # apt-cache policy prints each package's "Candidate:" in the order asked.
    versions=$(apt-cache policy "$image" busybox-static 2>/dev/null \
        | awk '/Candidate:/ { if ($2 != "(none)") print $2 }' | tr '\n' ' ') || true
    set -- $versions
    [ $# -eq 2 ] || return 1
    echo "$image $1 $2"
}
resolved=""
fingerprint=$(lists_fingerprint)
if [ -f "$cache/resolved" ]; then
    read -r saved_fingerprint saved_resolution <"$cache/resolved" || true
    [ "${saved_fingerprint:-}" != "$fingerprint" ] || resolved=${saved_resolution:-}
fi
if [ -z "$resolved" ]; then
    if ! resolved=$(ask_apt); then
        update_lists || true
        resolved=$(ask_apt) || die "apt knows no linux-image-cloud-amd64 or busybox-static (is a Debian bookworm source in /etc/apt/sources.list?)"
        fingerprint=$(lists_fingerprint)
    fi
    mkdir -p "$cache"
    echo "$fingerprint $resolved" >"$cache/resolved.tmp.$$" && mv "$cache/resolved.tmp.$$" "$cache/resolved"
fi
read -r image_package kernel_version busybox_version <<<"$resolved"

inputs_hash=$(cat "${inputs[@]}" | sha256sum | cut -c1-12)
key="${image_package#linux-image-}_${kernel_version}_busybox_${busybox_version//:/-}_${inputs_hash}"
out="$cache/$key"

report() {
    echo "kernel=$out/vmlinuz"
    echo "initrd=$out/initrd.img"
}

if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
    report
    exit 0
fi

mkdir -p "$cache"
# Parallel test workers build at once: one builds, the others wait for it and use its result.
exec 9>"$cache/.lock"
flock 9
if [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
    report
    exit 0
fi
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Downloads one package=version (kept in $cache/debs/<package>_<version>/, so a change to init
# repacks without fetching again), updating the apt lists once when apt fails (lists missing, or
# naming a version the mirror no longer has). Prints the .deb's path.
download() {
    local dir="$cache/debs/${1}_${2//:/-}" deb
    deb=$(ls "$dir"/*.deb 2>/dev/null | head -n 1) || true
    if [ -z "$deb" ]; then
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        if ! (cd "$dir.tmp" && apt-get download -qq "$1=$2" 2>"$work/apt.err" >&2); then
            update_lists || { cat "$work/apt.err" >&2; die "apt-get download $1=$2 failed"; }
            (cd "$dir.tmp" && apt-get download -qq "$1=$2" >&2) || die "apt-get download $1=$2 failed"
        fi
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        deb=$(ls "$dir"/*.deb | head -n 1)
    fi
    echo "$deb"
}

say "building $key"
kernel_deb=$(download "$image_package" "$kernel_version")
busybox_deb=$(download busybox-static "$busybox_version")
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"

kernel_release=${image_package#linux-image-}
moddir="$work/kernel/lib/modules/$kernel_release"
vmlinuz="$work/kernel/boot/vmlinuz-$kernel_release"
[ -f "$vmlinuz" ] || die "the package $image_package has no boot/vmlinuz-$kernel_release"
[ -f "$moddir/modules.order" ] || die "the package $image_package has no modules.order"
busybox="$work/busybox/bin/busybox"
[ -x "$busybox" ] || die "the package busybox-static has no bin/busybox"

# The .ko path of a module name (dashes and underscores are the same to the kernel).
module_path() {
    local pattern=${1//[-_]/[-_]}
    grep -E "/${pattern}\.ko$" "$moddir/modules.order" | head -n 1
}

# Depth-first: every module after the modules it depends on.
ordered=()
declare -A seen=()
add_module() {
    local name=$1 path deps dep
    [ -z "${seen[$name]:-}" ] || return 0
    seen[$name]=1
    path=$(module_path "$name")
    if [ -z "$path" ]; then
        grep -qE "/${name//[-_]/[-_]}\.ko$" "$moddir/modules.builtin" && return 0
        die "module $name is neither a module nor built into $kernel_release"
    fi
    deps=$(tr '\0' '\n' <"$moddir/$path" | sed -n 's/^depends=//p' | head -n 1)
    for dep in ${deps//,/ }; do add_module "$dep"; done
    ordered+=("$path")
}
for m in "${modules[@]}"; do add_module "$m"; done

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,mnt/disk,etc/acpi/PWRF,www}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
for path in "${ordered[@]}"; do
    mkdir -p "$root/lib/modules/$(dirname "$path")"
    cp "$moddir/$path" "$root/lib/modules/$path"
done
printf '%s\n' "${ordered[@]}" >"$root/etc/modules"
install -m 0755 "$here/init" "$root/init"
# busybox acpid runs /etc/acpi/PWRF/00000080 for the power button (its built-in action table).
install -m 0755 "$here/powerbutton" "$root/etc/acpi/PWRF/00000080"
echo "maqet-guest-httpd: served by the maqet test guest" >"$root/www/index.html"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) \
    | gzip -n -6 >"$work/initrd.img"

mkdir -p "$out"
cp "$vmlinuz" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$work/initrd.img" "$out/initrd.img"
say "built $out ($(du -k "$out/initrd.img" | cut -f1) KiB initramfs, modules: ${ordered[*]##*/})"
report
