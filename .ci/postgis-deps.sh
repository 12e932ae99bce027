#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, postgres) and the PostGIS extension
# are installed: the PostGIS tests start a throw-away cluster with them. Installs only what
# is missing, with apt-get, when this runs as root (or with sudo); otherwise says how.
set -euo pipefail

pg_bindir() {
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

has_postgis() {
    local bindir="$1" share
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] || return 1
    share="$("$bindir/pg_config" --sharedir 2>/dev/null || true)"
    if [ -z "$share" ]; then  # Debian: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        share="/usr/share/postgresql/$(basename "$(dirname "$bindir")")"
    fi
    [ -f "$share/extension/postgis.control" ]
}

bindir="$(pg_bindir || true)"
if has_postgis "$bindir"; then
    echo "postgis-deps: PostgreSQL ($bindir) and PostGIS are installed"
    exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        SUDO="none"
    fi
    if [ -n "$bindir" ]; then
        pkgs="postgresql-$(basename "$(dirname "$bindir")")-postgis-3"
    else
        pkgs="postgresql postgresql-NN-postgis-3 (NN: the server's major version)"
    fi
    if [ "$SUDO" != "none" ]; then
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        if [ -z "$bindir" ]; then  # the server first: its major version names PostGIS's package
            echo "postgis-deps: installing postgresql"
            $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
            bindir="$(pg_bindir || true)"
            if [ -z "$bindir" ]; then
                echo "postgis-deps: apt-get installed postgresql but no initdb/pg_ctl was found" >&2
                exit 1
            fi
        fi
        pkg="postgresql-$(basename "$(dirname "$bindir")")-postgis-3"
        echo "postgis-deps: installing $pkg"
        $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
        if has_postgis "$bindir"; then
            echo "postgis-deps: PostgreSQL ($bindir) and PostGIS installed"
            exit 0
        fi
        echo "postgis-deps: apt-get installed $pkg but $bindir has no postgis.control" >&2
        exit 1
    fi
    echo "postgis-deps: PostgreSQL server and PostGIS are missing; the PostGIS tests will be" \
         "skipped. Install them with: sudo apt-get install $pkgs" >&2
    exit 0
fi
echo "postgis-deps: PostgreSQL server and PostGIS are missing; the PostGIS tests will be" \
     "skipped. Install them (README: 'PostgreSQL and PostGIS'), e.g. brew install postgis," \
     "dnf install postgis, or conda install -c conda-forge postgresql postgis" >&2
exit 0
