# Installing Debian packages for the local infrastructure scripts (sourced, not run).
# The caller defines log() and die() first.

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# apt_install PACKAGE...: install quietly, without letting the packages' init scripts start
# system-wide services (redis on :6379, prometheus on :9090): a policy-rc.d that denies service
# starts is put in place for the install (Docker images ship one already, which is left alone).
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get is not available"
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "${policy}" ]]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' >${policy} && chmod 755 ${policy}"
        added_policy=1
    fi
    local rc=0
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
    } >&2 || rc=$?
    if ((added_policy)); then as_root rm -f "${policy}"; fi
    ((rc == 0)) || die "apt-get install $* failed (exit ${rc})"
}
