# Sourced by scripts/test, scripts/container-test and scripts/demo: installs the Debian
# packages the project needs.
# Only what is missing is installed; as root directly, otherwise through sudo.

ATTESTPROXY_PACKAGES=(
    build-essential meson ninja-build pkg-config
    libuv1-dev libssl-dev libcbor-dev libinih-dev libjansson-dev libcmocka-dev node-llhttp
    openssl curl ca-certificates
    python3 python3-pytest python3-pytest-timeout python3-cryptography python3-cbor2
    python3-requests python3-jsonschema python3-prometheus-client python3-websockets
    systemd groff-base procps valgrind strace cppcheck clang-format
    # The forward proxy of tests/e2e/test_upstream_proxy.py: Debian's tinyproxy binary alone
    # (the tinyproxy package would also enable a system-wide service on port 8888).
    tinyproxy-bin
)

# What scripts/container-test needs on top: podman and what it runs on (see the notes in
# scripts/container-test), both compose tools, and the simulator's Python modules.
ATTESTPROXY_CONTAINER_PACKAGES=(
    podman buildah debootstrap runc crun uidmap fuse-overlayfs slirp4netns
    containernetworking-plugins golang-github-containers-common catatonit iptables
    systemd-container podman-compose docker-compose python3-yaml
    python3 python3-cryptography python3-cbor2 ca-certificates
)

deps_missing() {
    local pkg missing=()
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    echo "${missing[@]}"
}

deps_install() {
    local missing
    missing=$(deps_missing "$@")
    [ -z "$missing" ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install: $missing" >&2; return 1; }
        sudo=(sudo)
    fi
    echo "installing Debian packages: $missing"
    "${sudo[@]}" apt-get update -qq || return 1
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends $missing
}

# Node.js and npm (for the `openai` SDK test) may come from Debian or from another packaging that
# bundles npm; only when the commands are missing are Debian's packages installed.
deps_install_node() {
    if command -v node >/dev/null && command -v npm >/dev/null; then
        return 0
    fi
    deps_install nodejs npm
}
