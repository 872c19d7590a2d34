#!/usr/bin/env bash
# Install the system packages the test suite needs: a real Dovecot for IMAP + LMTP, and
# systemd for `systemd-analyze verify` of deploy/mleg.service (tests/test_installed_wheel.py), and
# Debian's headless Chromium with its WebDriver for the web console's browser test.
# Idempotent: installs only what is missing. Called from `make test`.
set -euo pipefail

PACKAGES=()
if command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; then
    echo "install-test-deps: dovecot already installed ($(/usr/sbin/dovecot --version 2>/dev/null || dovecot --version))"
else
    PACKAGES+=(dovecot-imapd dovecot-lmtpd)
fi
if command -v systemd-analyze >/dev/null 2>&1; then
    echo "install-test-deps: systemd-analyze already installed"
else
    PACKAGES+=(systemd)
fi
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
    echo "install-test-deps: chromium and chromedriver already installed"
else
    PACKAGES+=(chromium chromium-driver)
fi
if [ "${#PACKAGES[@]}" -eq 0 ]; then
    echo "install-test-deps: nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-test-deps: need root or sudo to install ${PACKAGES[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: apt-get not found; install ${PACKAGES[*]} (Dovecot 2.3+) by hand" >&2
    exit 1
fi

# The packages try to start the system dovecot service; in containers/CI that is either
# refused or unwanted. policy-rc.d exit 101 tells invoke-rc.d not to start anything.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    CREATED_POLICY=1
fi
cleanup() {
    if [ "$CREATED_POLICY" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

echo "install-test-deps: apt-get update"
"${SUDO[@]}" apt-get update -q
echo "install-test-deps: installing ${PACKAGES[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

# The system service must not hold the standard ports; the tests start a private instance.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet dovecot 2>/dev/null; then
    "${SUDO[@]}" systemctl stop dovecot || true
fi

if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
    echo "install-test-deps: dovecot still missing after install" >&2
    exit 1
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "install-test-deps: systemd-analyze still missing after install" >&2
    exit 1
fi
if ! command -v chromedriver >/dev/null 2>&1; then
    echo "install-test-deps: chromedriver still missing after install" >&2
    exit 1
fi
echo "install-test-deps: installed ${PACKAGES[*]}; dovecot $(/usr/sbin/dovecot --version)"
