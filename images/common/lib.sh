# Shared steps of the Debian 12 browser recipes (images/debian-12-*/build),
# sourced by them; not a recipe itself (it has no 'build').
#
# A recipe sets, then calls legba_build OUTDIR:
#   LEGBA_PACKAGES     the browser's Debian packages
#   LEGBA_PROTOCOL     how the agent drives the browser: cdp or bidi
#   LEGBA_DESCRIPTION  the manifest's description (no '"' or '\')
# and defines recipe_customize ROOTFS, which installs the browser launcher
# as ROOTFS/usr/lib/legba/browser (run as `browser START_URL`) and any
# browser settings.
#
# Environment knobs (all optional):
#   LEGBA_APT_CACHE    a directory kept between builds for downloaded .debs
#                      (apt checks each against the signed index before use)
#   LEGBA_QCOW2_COMPRESS=1  zlib-compress the qcow2 (smaller, slower to read)

LEGBA_SUITE=bookworm
LEGBA_COMMON_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
readonly LEGBA_SUITE LEGBA_COMMON_DIR

# What every browser image holds besides the browser itself.
LEGBA_BASE_PACKAGES=(
    linux-image-amd64 systemd-sysv udev zstd passwd ca-certificates
    xserver-xorg-core xserver-xorg-input-libinput xinit x11-xserver-utils
    matchbox-window-manager spice-vdagent
    fonts-dejavu-core fonts-liberation2
    python3
)

# Nobody reads documentation, man pages or translations in a kiosk; the
# kernel needs no sound, wireless, media or other-vendor GPU drivers in a
# QEMU guest. Copyright files stay.
LEGBA_DPKG_EXCLUDES=(
    '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*'
    '/lib/modules/*/kernel/sound/*'
    '/lib/modules/*/kernel/drivers/media/*'
    '/lib/modules/*/kernel/drivers/net/wireless/*'
    '/lib/modules/*/kernel/drivers/net/ethernet/*'
    '/lib/modules/*/kernel/drivers/net/wwan/*'
    '/lib/modules/*/kernel/drivers/net/can/*'
    '/lib/modules/*/kernel/drivers/net/usb/*'
    '/lib/modules/*/kernel/drivers/infiniband/*'
    '/lib/modules/*/kernel/drivers/staging/*'
    '/lib/modules/*/kernel/drivers/comedi/*'
    '/lib/modules/*/kernel/drivers/iio/*'
    '/lib/modules/*/kernel/drivers/isdn/*'
    '/lib/modules/*/kernel/drivers/bluetooth/*'
    '/lib/modules/*/kernel/drivers/scsi/*/*'
    '/lib/modules/*/kernel/drivers/gpu/drm/amd/*'
    '/lib/modules/*/kernel/drivers/gpu/drm/radeon/*'
    '/lib/modules/*/kernel/drivers/gpu/drm/nouveau/*'
    '/lib/modules/*/kernel/drivers/gpu/drm/i915/*'
    '/lib/modules/*/kernel/net/bluetooth/*'
    '/lib/modules/*/kernel/net/mac80211/*'
    '/lib/modules/*/kernel/net/wireless/*'
    '/lib/modules/*/kernel/fs/xfs/*' '/lib/modules/*/kernel/fs/btrfs/*'
    '/lib/modules/*/kernel/fs/ocfs2/*' '/lib/modules/*/kernel/fs/gfs2/*'
    '/lib/modules/*/kernel/fs/nfs/*' '/lib/modules/*/kernel/fs/nfsd/*'
    '/lib/modules/*/kernel/fs/smb/*' '/lib/modules/*/kernel/fs/ceph/*'
    '/lib/modules/*/kernel/fs/afs/*' '/lib/modules/*/kernel/fs/f2fs/*'
)

# Units a kiosk boot does not need; masked, not disabled, so that no
# preset brings them back.
LEGBA_MASKED_UNITS=(
    getty@tty1.service serial-getty@ttyS0.service console-getty.service
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer
    e2scrub_all.timer e2scrub_reap.service fstrim.timer
    systemd-networkd-wait-online.service
    systemd-hwdb-update.service ldconfig.service systemd-pstore.service
    systemd-logind.service systemd-rfkill.socket systemd-rfkill.service
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
    systemd-update-utmp.service systemd-update-utmp-runlevel.service
    remote-fs.target
    # legba-vdagentd.service runs the SPICE agent instead, only with a clipboard port.
    spice-vdagentd.service spice-vdagentd.socket
)

# The initramfs only has to mount the root file system on the virtio disk:
# listing the few modules that takes (instead of MODULES=most) makes it a
# fifth of the size, and the boot under TCG seconds shorter.
LEGBA_INITRAMFS_MODULES=(virtio_pci virtio_blk ext4)

# The kernel command line of the manifest: the root is the whole virtio
# disk (no partition table); the screen stays free of boot messages; memory
# that a virtio-mem device plugs in goes online by itself, in the movable
# zone, so the guest can give it back (the manifest's "memory_hotplug").
LEGBA_CMDLINE="root=/dev/vda rw console=ttyS0 quiet loglevel=3 memhp_default_state=online_movable"

LEGBA_START_URL=file:///usr/share/legba/start.html
# start.html's background: the agent reports the start page drawn at boot as
# soon as the screen's edges show it (the legba_self_test checks they agree).
LEGBA_START_COLOR=1d2330

legba_say() {
    printf '%s: %s (%ds)\n' "$IMAGE_NAME" "$*" "$SECONDS"
}

legba_die() {
    printf '%s: error: %s\n' "$IMAGE_NAME" "$*" >&2
    exit 1
}

legba_check_env() {
    local want=$1 cmd
    [[ $IMAGE_NAME == "$want" ]] || legba_die "this recipe builds '$want', not '$IMAGE_NAME'"
    # Both go into JSON unescaped, so they must be exactly what build-image sends.
    [[ $RECIPE_SHA256 =~ ^[0-9a-f]{64}$ ]] || legba_die "RECIPE_SHA256 is not a sha256"
    (($(id -u) == 0)) || legba_die "run as root: mmdebstrap builds the root filesystem in root mode"
    for cmd in mmdebstrap mkfs.ext4 qemu-img chroot; do
        command -v "$cmd" >/dev/null || legba_die "$cmd is missing (tools/setup installs it)"
    done
}

# Runs (as an mmdebstrap hook, with the root as $1) before the kernel's
# package builds the initramfs.
legba_initramfs_hook() {
    # Files no package owns, so dpkg asks nothing when initramfs-tools comes.
    printf 'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
    printf 'printf "MODULES=list\\n" >"$1/etc/initramfs-tools/conf.d/legba.conf" && '
    printf 'printf "%%s\\n" %s >"$1/usr/share/initramfs-tools/modules.d/legba"' "${LEGBA_INITRAMFS_MODULES[*]}"
}

# Packages from Debian 12 (bookworm, -updates and -security: mmdebstrap
# adds both for a stable suite) into an empty directory.
legba_mmdebstrap() {
    local root=$1 pattern
    local args=(--variant=apt --mode=root --format=directory)
    for pattern in "${LEGBA_DPKG_EXCLUDES[@]}"; do
        args+=("--dpkgopt=path-exclude=$pattern")
    done
    args+=("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    args+=("--include=${LEGBA_BASE_PACKAGES[*]} ${LEGBA_PACKAGES[*]}")
    args+=(--essential-hook="$(legba_initramfs_hook)")
    # No fsync per unpacked file while building (a crash just fails the
    # build); the image keeps dpkg's safe default.
    args+=(--setup-hook='mkdir -p "$1/etc/dpkg/dpkg.cfg.d" && echo force-unsafe-io >"$1/etc/dpkg/dpkg.cfg.d/legba-build"'
        --customize-hook='rm -f "$1/etc/dpkg/dpkg.cfg.d/legba-build"')
    if [[ -n ${LEGBA_APT_CACHE:-} ]]; then
        mkdir -p -- "$LEGBA_APT_CACHE"
        args+=(--skip=download/empty --skip=essential/unlink
            --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
            --setup-hook="sync-in $(printf %q "$LEGBA_APT_CACHE") /var/cache/apt/archives/"
            --customize-hook="sync-out /var/cache/apt/archives $(printf %q "$LEGBA_APT_CACHE")")
    fi
    legba_say "mmdebstrap $LEGBA_SUITE: ${LEGBA_BASE_PACKAGES[*]} ${LEGBA_PACKAGES[*]}"
    mmdebstrap "${args[@]}" "$LEGBA_SUITE" "$root"
}

# The parts every browser image shares: users, agent, session, units.
legba_install_common() {
    local root=$1 c=$LEGBA_COMMON_DIR
    legba_say "installing the legba session and agent"

    chroot "$root" useradd --system --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin legba-agent
    chroot "$root" useradd --user-group --create-home --shell /bin/bash \
        --comment "legba kiosk browser" browser
    chroot "$root" usermod --append --groups video,render,input browser

    install -D -m 0755 "$c/legba-agent" "$root/usr/lib/legba/legba-agent"
    install -D -m 0755 "$c/legba-session" "$root/usr/lib/legba/legba-session"
    install -D -m 0644 "$c/start.html" "$root/usr/share/legba/start.html"
    install -D -m 0644 "$c/README.md" "$root/usr/share/legba/README"
    install -D -m 0644 "$c/legba-session.service" "$root/etc/systemd/system/legba-session.service"
    install -D -m 0644 "$c/legba-agent.service" "$root/etc/systemd/system/legba-agent.service"
    install -D -m 0644 "$c/70-legba-agent.rules" "$root/etc/udev/rules.d/70-legba-agent.rules"
    install -D -m 0644 "$c/80-legba-dhcp.network" "$root/etc/systemd/network/80-legba-dhcp.network"
    install -D -m 0644 "$c/71-legba-network.rules" "$root/etc/udev/rules.d/71-legba-network.rules"
    install -D -m 0644 "$c/10-legba.conf" "$root/etc/X11/xorg.conf.d/10-legba.conf"
    install -D -m 0644 "$c/journald.conf" "$root/etc/systemd/journald.conf.d/legba.conf"
    install -D -m 0644 "$c/legba-vdagentd.service" "$root/etc/systemd/system/legba-vdagentd.service"
    install -D -m 0644 "$c/72-legba-clipboard.rules" "$root/etc/udev/rules.d/72-legba-clipboard.rules"
    install -D -m 0644 "$c/60-legba-net.conf" "$root/etc/sysctl.d/60-legba-net.conf"
    [[ -x $root/usr/sbin/spice-vdagentd && -x $root/usr/bin/spice-vdagent ]] ||
        legba_die "spice-vdagent did not install spice-vdagentd and spice-vdagent"

    mkdir -p "$root/etc/legba"
    printf 'protocol=%s\nstart_url=%s\nstart_color=%s\n' \
        "$LEGBA_PROTOCOL" "$LEGBA_START_URL" "$LEGBA_START_COLOR" >"$root/etc/legba/agent.conf"
    printf ': "${LEGBA_BROWSER:=/usr/lib/legba/browser}"\n: "${LEGBA_START_URL:=%s}"\n' \
        "$LEGBA_START_URL" >"$root/etc/legba/session.conf"
    chmod 0644 "$root/etc/legba/agent.conf" "$root/etc/legba/session.conf"

    echo legba >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tlegba\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$root/etc/hosts"
    printf '/dev/vda\t/\text4\trw,noatime\t0\t1\n' >"$root/etc/fstab"
    # Loaded early so the X session finds /dev/dri/card0 (and the agent its port) soon.
    printf 'virtio_gpu\nvirtio_console\n' >"$root/etc/modules-load.d/legba.conf"

    # /tmp in memory: browser profiles and shared memory files never touch the disk.
    [[ -e $root/etc/systemd/system/tmp.mount ]] ||
        cp -- "$root/usr/share/systemd/tmp.mount" "$root/etc/systemd/system/tmp.mount"

    chroot "$root" systemctl --quiet set-default multi-user.target
    # networkd idles without a NIC; with one (user-mode networking) it takes a DHCP lease.
    chroot "$root" systemctl --quiet enable legba-session.service legba-agent.service tmp.mount \
        systemd-networkd.service
    chroot "$root" systemctl --quiet mask "${LEGBA_MASKED_UNITS[@]}"
}

# Each instance gets its own identity at first boot; nothing of the build stays.
legba_scrub() {
    local root=$1
    legba_say "removing build leftovers"
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
    # The build host's resolver must not leak in; the guest needs no DNS.
    rm -f "$root/etc/resolv.conf"
    : >"$root/etc/resolv.conf"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
        "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.bash_history
    # The kernel and initrd boot from the image directory, not from the disk.
    rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* "$root"/vmlinuz* "$root"/initrd.img*
}

# Proves, inside the image, that the session loop starts a browser that
# exits again (a stand-in that exits at once) and that the agent's URL
# check holds.
legba_self_test() {
    local root=$1 runs
    legba_say "testing the restart loop and the agent's URL check"
    grep -q "background: #$LEGBA_START_COLOR;" "$root/usr/share/legba/start.html" ||
        legba_die "start.html's background is not #$LEGBA_START_COLOR (LEGBA_START_COLOR)"
    printf '#!/bin/sh\necho run >>/tmp/legba-loop-test\nexit 3\n' >"$root/tmp/legba-dummy-browser"
    chmod 0755 "$root/tmp/legba-dummy-browser"
    chroot "$root" env -u DISPLAY LEGBA_BROWSER=/tmp/legba-dummy-browser \
        timeout 7 /usr/lib/legba/legba-session 2>/dev/null || true
    runs=$(wc -l <"$root/tmp/legba-loop-test")
    rm -f "$root/tmp/legba-dummy-browser" "$root/tmp/legba-loop-test"
    ((runs >= 3)) || legba_die "the session loop started the browser $runs times in 7 s, expected at least 3"
    chroot "$root" python3 -B - <<'PY' || legba_die "the agent's self-test failed"
import importlib.machinery, importlib.util
loader = importlib.machinery.SourceFileLoader("agent", "/usr/lib/legba/legba-agent")
spec = importlib.util.spec_from_loader("agent", loader)
agent = importlib.util.module_from_spec(spec)
loader.exec_module(agent)
good = ["http://example.com/", "https://10.0.2.2:8080/a?b=c#d", "HTTP://x"]
bad = ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,x", "http://",
       "http://a b/", "http://x/\n", "ftp://x/", 'http://x/"', "http://x/" + "a" * 2048, 5, None]
for url in good:
    assert agent.validate_url(url) is None, url
for url in bad:
    assert agent.validate_url(url) is not None, url
assert agent.valid_id(1) and not agent.valid_id(0) and not agent.valid_id(True)
assert not agent.valid_id(1.0) and not agent.valid_id(2**53)
PY
}

# An ext4 file system of the whole tree with room to spare for an instance's
# writes, sparse, then qcow2 (which stores only the used clusters).
legba_make_disk() {
    local root=$1 out=$2 raw=$2/.disk.raw used_mib size_mib
    used_mib=$(du -s -x --block-size=1M -- "$root" | cut -f1)
    size_mib=$((used_mib + used_mib / 10 + 1536))
    legba_say "ext4 of ${used_mib} MiB used in ${size_mib} MiB"
    truncate -s "${size_mib}M" -- "$raw"
    # Inode tables and journal zeroed now (holes in the sparse file), so no
    # instance spends its first boot initialising them in the background.
    mkfs.ext4 -q -F -L legba-root -m 0 -d "$root" \
        -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -- "$raw"
    local convert=(qemu-img convert -f raw -O qcow2)
    [[ ${LEGBA_QCOW2_COMPRESS:-0} == 1 ]] && convert+=(-c)
    legba_say "converting to qcow2"
    "${convert[@]}" -- "$raw" "$out/disk.qcow2"
    rm -f -- "$raw"
}

legba_copy_boot() {
    local root=$1 out=$2 kernels initrds
    kernels=("$root"/boot/vmlinuz-*)
    initrds=("$root"/boot/initrd.img-*)
    ((${#kernels[@]} == 1)) && [[ -f ${kernels[0]} ]] ||
        legba_die "expected one kernel in /boot, found: ${kernels[*]}"
    ((${#initrds[@]} == 1)) && [[ -f ${initrds[0]} ]] ||
        legba_die "expected one initrd in /boot, found: ${initrds[*]}"
    legba_say "kernel $(basename -- "${kernels[0]}")"
    cp -- "${kernels[0]}" "$out/vmlinuz"
    cp -- "${initrds[0]}" "$out/initrd.img"
}

legba_write_manifest() {
    local out=$1 built_at
    [[ $LEGBA_DESCRIPTION != *[\"\\]* ]] || legba_die "the description must not hold '\"' or '\\'"
    built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cat >"$out/manifest.json" <<JSON
{
  "schema": 1,
  "name": "$IMAGE_NAME",
  "description": "$LEGBA_DESCRIPTION",
  "boot": "kernel",
  "disk": "disk.qcow2",
  "disk_format": "qcow2",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "cmdline": "$LEGBA_CMDLINE",
  "clipboard": true,
  "memory_hotplug": true,
  "recipe_sha256": "$RECIPE_SHA256",
  "built_at": "$built_at"
}
JSON
}

legba_build() {
    local out=$1 work root
    [[ -d $out ]] || legba_die "no output directory $out"
    # Beside the output (same file system, which has room for images); the
    # whole OUTDIR goes if the build fails, this directory also on success.
    work=$(mktemp -d -- "$out/.rootfs.XXXXXX")
    # apt downloads as _apt, which must reach the tree (OUTDIR becomes 0755 anyway).
    chmod 0755 -- "$out" "$work"
    root=$work/root
    # shellcheck disable=SC2064 # expand now: work is local
    trap "rm -rf --one-file-system -- '$work'" EXIT

    legba_mmdebstrap "$root"
    legba_install_common "$root"
    recipe_customize "$root"
    [[ -x $root/usr/lib/legba/browser ]] || legba_die "the recipe installed no /usr/lib/legba/browser"
    legba_self_test "$root"
    legba_copy_boot "$root" "$out"
    legba_scrub "$root"
    legba_make_disk "$root" "$out"
    rm -rf --one-file-system -- "$work"
    trap - EXIT
    legba_write_manifest "$out"
    legba_say "done: $(du -h --apparent-size -- "$out/disk.qcow2" | cut -f1) qcow2"
}
