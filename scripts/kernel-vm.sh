#!/usr/bin/env bash
# Boots one of Debian's kernels under qemu (TCG: KVM does not work on these machines) with
# the host's root filesystem shared read-only, so the eBPF objects, node and the test peers
# can be checked against older kernels than the host's without building an image.
#
#   scripts/kernel-vm.sh fetch SUITE
#       Downloads and caches the kernel and builds its initramfs; prints the cached dir.
#   scripts/kernel-vm.sh run SUITE OUTDIR TIMEOUT_S [--share DIR] -- COMMAND [ARGS...]
#       Runs COMMAND as root in the guest, chrooted into the host's root; its /tmp is the
#       guest's own, so --share DIR shows a host directory at its own path all the same.
#       Output goes to the console (printed here) and OUTDIR/output.log; the console is kept
#       in OUTDIR/console.log. Exits with COMMAND's exit code, 124 if TIMEOUT_S passed
#       first, 125 if the guest never reported one.
#
# SUITE is bullseye (Linux 5.10), bookworm (6.1) or trixie (6.12). The cache lives outside
# the repository, in ${NETRIG_KERNEL_CACHE:-/var/cache/netrig/kernels}/SUITE.
set -euo pipefail

CACHE=${NETRIG_KERNEL_CACHE:-/var/cache/netrig/kernels}
# Where OUTDIR appears in the guest. It must already exist, empty, on the host: the root is
# read-only there, so no mount point can be created. /mnt is not empty on these machines
# (it holds the sandbox's tools); /srv is empty and nothing of netrig's lives there.
GUEST_OUT=/srv
# 9p modules in load order (each needs the ones before it); those built into a kernel are
# absent from its modules tree and skipped.
MODULES=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
         netfs fscache 9pnet 9pnet_virtio 9p
         veth)  # the tests' hosts are network namespaces joined by veth pairs

usage() {
  sed -n '6,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() { echo "kernel-vm: $*" >&2; exit 1; }

# Makes sure $CACHE/$suite holds vmlinuz and initrd.gz; sets KDIR to that directory.
# initrd.gz is written last and renamed into place, so its presence means a complete fetch.
ensure_kernel() {
  local suite=$1
  case $suite in bullseye|bookworm|trixie) ;; *) die "unknown suite '$suite' (bullseye, bookworm, trixie)";; esac
  "$(dirname "$0")/install-debs.sh" busybox-static qemu-system-x86 >/dev/null
  KDIR=$CACHE/$suite
  mkdir -p "$KDIR"
  # Two concurrent fetches of one suite would write the same files.
  exec 9>"$KDIR/.lock"
  flock 9
  # The module list and the init are the initrd: a change to either rebuilds it.
  local stamp
  stamp=$({ echo "${MODULES[*]}"; write_init; } | sha256sum | cut -d' ' -f1)
  if [[ -s $KDIR/initrd.gz && -s $KDIR/vmlinuz && $(cat "$KDIR/initrd.stamp" 2>/dev/null) == "$stamp" ]]; then
    exec 9>&-
    return 0
  fi

  # apt with a sources list, lists and cache of our own: the machine's configuration is
  # neither read for sources nor changed.
  mkdir -p "$KDIR/apt/lists/partial" "$KDIR/apt/cache/archives/partial"
  echo "deb http://deb.debian.org/debian $suite main" >"$KDIR/apt/sources.list"
  local apt_opts=(-o "Dir::Etc::sourcelist=$KDIR/apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
                  -o "Dir::State::Lists=$KDIR/apt/lists" -o "Dir::Cache=$KDIR/apt/cache")
  echo "kernel-vm: updating the $suite package lists" >&2
  apt-get "${apt_opts[@]}" update -q >/dev/null
  # The metapackage depends on the signed, versioned image; the unsigned one has the same
  # kernel and modules without the Secure Boot signature.
  local deps pkg
  deps=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64)
  [[ $deps =~ Depends:\ (linux-image-[^[:space:]]+-amd64) ]] ||
    die "no versioned linux-image-*-amd64 among linux-image-amd64's dependencies in $suite"
  pkg=${BASH_REMATCH[1]}-unsigned
  apt-cache "${apt_opts[@]}" show "$pkg" >/dev/null 2>&1 || die "$suite has no package $pkg"
  echo "kernel-vm: downloading $pkg" >&2
  rm -rf "$KDIR/deb" "$KDIR/root"
  mkdir -p "$KDIR/deb"
  # As root apt would hand the download to its _apt user, which cannot write to the cache.
  (cd "$KDIR/deb" && apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root download -q "$pkg" >/dev/null)
  dpkg-deb -x "$KDIR"/deb/*.deb "$KDIR/root"

  # Trixie's packages keep modules under usr/lib/modules.
  local moddir release
  for moddir in "$KDIR"/root/lib/modules/* "$KDIR"/root/usr/lib/modules/*; do [[ -d $moddir ]] && break; done
  [[ -d $moddir ]] || die "$pkg has no modules directory"
  release=${moddir##*/}
  cp "$KDIR/root/boot/vmlinuz-$release" "$KDIR/vmlinuz"
  echo "$release" >"$KDIR/release"

  # The initramfs: static busybox, the 9p modules and an init that mounts the host's root.
  # Its tree stays in the cache for inspection.
  local stage=$KDIR/initramfs i=0 m ko
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,modules,proc,sys,dev,newroot}
  cp /bin/busybox "$stage/bin/busybox"
  for m in "${MODULES[@]}"; do
    ko=$(find "$moddir" \( -name "$m.ko" -o -name "$m.ko.xz" \) -print -quit)
    [[ -n $ko ]] || continue
    # Numbered so the init's glob loads them in dependency order; busybox insmod does not
    # decompress.
    i=$((i + 1))
    case $ko in
      *.xz) busybox unxz -c "$ko" >"$stage/modules/$(printf %02d "$i")-$m.ko" ;;
      *) cp "$ko" "$stage/modules/$(printf %02d "$i")-$m.ko" ;;
    esac
  done
  write_init >"$stage/init"
  chmod 755 "$stage/init"
  (cd "$stage" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9) >"$KDIR/initrd.gz.tmp"
  mv "$KDIR/initrd.gz.tmp" "$KDIR/initrd.gz"
  echo "$stamp" >"$KDIR/initrd.stamp"
  exec 9>&-
  echo "kernel-vm: $suite kernel $release cached" >&2
}

# The guest's init. A failed set-up step powers the guest off before it writes an exit
# code, so the host reports 125 with the console's last lines, which show the step's error
# (rather than the kernel's panic trace had init just exited).
write_init() {
  cat <<EOF
#!/bin/busybox sh
set -e
trap 'echo "init: a set-up step failed; powering off"; /bin/busybox poweroff -f' EXIT
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The kernel may have found no /dev/console in the initramfs to give init as its stdio.
exec </dev/console >/dev/console 2>&1
for m in /modules/*.ko; do insmod "\$m"; done
# msize above the 8 KiB default, which qemu warns about as degraded performance (bulk
# reads of host files measured about a fifth faster; node's start-up did not change).
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro hostroot /newroot
cd /newroot
mount -t proc proc proc
mount -t sysfs sys sys
mount -t devtmpfs dev dev
mount -t tmpfs tmp tmp
# ip netns needs a writable /run/netns.
mount -t tmpfs run run
mount -t bpf bpf sys/fs/bpf
mount -t tracefs tracefs sys/kernel/tracing
mount -t debugfs debugfs sys/kernel/debug 2>/dev/null || echo "init: no debugfs"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results .$GUEST_OUT
# --share: a host directory at its own path, seen even where the tmpfs on /tmp hides it.
if [ -s .$GUEST_OUT/share_path ]; then
  share=\$(cat .$GUEST_OUT/share_path)
  mkdir -p ".\$share"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro share ".\$share"
fi
ip link set lo up
set +e
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \\
  /bin/sh -c '{ sh $GUEST_OUT/cmd.sh </dev/null; echo \$? >$GUEST_OUT/exit_code; } 2>&1 | tee $GUEST_OUT/output.log'
sync
poweroff -f
EOF
}

run() {
  [[ $# -ge 5 && $3 =~ ^[0-9]+$ ]] || usage
  local suite=$1 out=$2 timeout_s=$3 share=''
  shift 3
  if [[ $1 == --share ]]; then
    [[ -d ${2:-} ]] || die "--share needs a directory"
    share=$(realpath "$2")
    shift 2
  fi
  [[ ${1:-} == -- && $# -ge 2 ]] || usage
  shift
  ensure_kernel "$suite"
  mkdir -p "$out"
  out=$(realpath "$out")
  rm -f "$out/cmd.sh" "$out/output.log" "$out/exit_code" "$out/console.log" "$out/share_path"
  local share_opts=()
  if [[ -n $share ]]; then
    printf '%s\n' "$share" >"$out/share_path"
    share_opts=(-virtfs "local,path=${share//,/,,},mount_tag=share,security_model=none,readonly=on,multidevs=remap")
  fi
  # The command reaches the guest as a script in OUTDIR, each argument single-quoted, so no
  # byte of it is interpreted on the way (the kernel command line could not carry it).
  local arg line=exec
  for arg in "$@"; do line+=" '${arg//\'/\'\\\'\'}'"; done
  printf '%s\n' "$line" >"$out/cmd.sh"

  # qboot (from qemu-system-data) instead of SeaBIOS: it prints nothing, where SeaBIOS
  # resets the terminal with escape codes on the serial console. -nic none: the guest's
  # networking is loopback and namespaces only. A comma in an option value is written as
  # two.
  local rc=0
  timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 1 \
    -nographic -no-reboot -nic none -bios qboot.rom \
    -kernel "$KDIR/vmlinuz" -initrd "$KDIR/initrd.gz" -append "console=ttyS0 panic=-1 quiet" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=${out//,/,,},mount_tag=results,security_model=none" "${share_opts[@]}" \
    </dev/null | tee "$out/console.log" || rc=${PIPESTATUS[0]}

  if [[ -s $out/exit_code ]]; then
    exit "$(<"$out/exit_code")"
  elif ((rc == 124 || rc == 137)); then
    echo "kernel-vm: timed out after ${timeout_s}s; last console lines:" >&2
    tail -n 20 "$out/console.log" >&2
    exit 124
  fi
  echo "kernel-vm: the guest wrote no exit code (qemu exited with $rc); last console lines:" >&2
  tail -n 20 "$out/console.log" >&2
  exit 125
}

case ${1:-} in
  fetch) (($# == 2)) || usage; ensure_kernel "$2"; echo "$KDIR" ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
