#!/usr/bin/env bash
# Install, upgrade or remove slicemesh on this machine; run as root from a checkout (docs/deploy.md).
#   deploy/install.sh controller [--no-apt]    # the controller machine
#   deploy/install.sh agent [--no-apt]         # every node (write /etc/slicemesh/agent.yaml first, or after)
#   deploy/install.sh upgrade [--no-apt]       # rebuild from this checkout into the same venv, restart the daemons
#   deploy/install.sh uninstall [--purge]      # remove program and units; --purge also /etc/slicemesh and /var/lib/slicemesh
#   deploy/install.sh packages controller|agent  # the Debian packages a role needs, one line
# What it installs is a wheel built from the checkout, in its own virtualenv: the checkout can be
# moved, changed or deleted afterwards. --no-apt: never run apt-get; fail if a package is missing.
# pip's own settings apply (PIP_INDEX_URL, or PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR for machines without PyPI).
set -euo pipefail
shopt -s inherit_errexit

PREFIX=/opt/slicemesh
VENV=$PREFIX/venv
ETC=/etc/slicemesh
STATE=/var/lib/slicemesh
BIN=/usr/local/bin/slicemesh
UNITS=/etc/systemd/system
ROLES="controller agent"
# The controller needs only Python; an agent needs what the Makefile's DEB_PACKAGES lists
# (runc, busybox-static, qemu-system-x86, ...), read from there so the two never disagree.
CONTROLLER_DEBS="python3 python3-venv ca-certificates"
export PIP_DISABLE_PIP_VERSION_CHECK=1

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { echo "usage: install.sh controller|agent|upgrade [--no-apt] | uninstall [--purge] | packages controller|agent" >&2; exit 2; }
say() { echo "install.sh: $*"; }

src=$(cd "$(dirname "$0")/.." && pwd)
action=${1:-}
[ $# -gt 0 ] && shift
no_apt=0 purge=0 role_arg=""
for arg in "$@"; do
    case "$arg:$action" in
        --no-apt:controller | --no-apt:agent | --no-apt:upgrade) no_apt=1 ;;
        --purge:uninstall) purge=1 ;;
        controller:packages | agent:packages) role_arg=$arg ;;
        *) usage ;;
    esac
done

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it writes $PREFIX, $ETC, $STATE, $UNITS)"; }
systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

debs_for() {  # the Debian packages role $1 needs
    if [ "$1" = controller ]; then echo "$CONTROLLER_DEBS"; return; fi
    local list
    list=$(sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' "$src/Makefile" | sed -n 's/^DEB_PACKAGES[[:space:]]*:*=[[:space:]]*//p' | tr -s ' ')
    [ -n "$list" ] || die "cannot read DEB_PACKAGES from $src/Makefile"
    echo "$list"
}

ensure_debs() {  # install the missing packages of role $1, or with --no-apt refuse
    local missing="" p
    for p in $(debs_for "$1"); do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    [ "$no_apt" -eq 0 ] || die "missing Debian packages:$missing (install them, or run without --no-apt)"
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing || die "apt-get could not install:$missing"
}

check_python() {
    command -v python3 >/dev/null || die "no python3 (apt-get install python3 python3-venv)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$(python3 -V 2>&1) is too old: slicemesh needs Python 3.11 or newer"
    # Debian ships ensurepip (what `python3 -m venv` needs) in python3-venv, not with python3.
    python3 -c 'import ensurepip, venv; ensurepip.version()' >/dev/null 2>&1 || die "python3 cannot make a virtualenv: install python3-venv (apt-get install python3-venv)"
}

drop_old_layout() {  # before the venv layout, $PREFIX was a copy of a checkout with its .venv
    [ -e "$PREFIX/pyproject.toml" ] || return 0
    [ "$src" != "$PREFIX" ] || die "$PREFIX is an old install (a copy of a checkout): run install.sh from a checkout elsewhere"
    rm -rf "$PREFIX"
    say "removed the old install in $PREFIX (a copy of a checkout); config and state stay"
}

make_venv() {  # a venv whose python is the system's current python3 (recreated after a Python upgrade)
    local want have=""
    want=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ -x "$VENV/bin/python" ] && have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
    [ "$have" = "$want" ] && return 0
    [ -z "$have" ] || say "the venv's Python ($have) is not the system's ($want): making it again"
    rm -rf "$VENV"
    mkdir -p "$PREFIX"
    python3 -m venv "$VENV" >"$work/venv.log" 2>&1 || { rm -rf "$VENV"; die "python3 -m venv $VENV failed: $(tail -n 1 "$work/venv.log")"; }
}

install_wheel() {  # build a wheel from a copy of the checkout and (re)install it with its dependencies
    mkdir -p "$work/src"
    # A copy, so that building writes nothing into the checkout and nothing of it (its .venv) comes along.
    tar -C "$src" --exclude=./.venv --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude='./.*_cache' --exclude=./.hypothesis -cf - . | tar -C "$work/src" -xf - \
        || die "copying $src to $work/src failed"
    say "building the slicemesh wheel from $src"
    "$VENV/bin/pip" wheel -q --no-deps -w "$work/wheel" "$work/src" || die "building the wheel failed (pip's output above)"
    local wheel
    wheel=$(echo "$work"/wheel/slicemesh-*.whl)
    [ -f "$wheel" ] || die "pip wheel made no slicemesh wheel in $work/wheel"
    # Same version number as what is installed: force it in, then let pip add any new dependency.
    "$VENV/bin/pip" install -q --no-deps --force-reinstall "$wheel" || die "installing $wheel failed (pip's output above)"
    "$VENV/bin/pip" install -q "$wheel" || die "installing the dependencies of slicemesh failed (pip's output above)"
    "$VENV/bin/pip" check >/dev/null || die "the venv's packages do not fit together: $VENV/bin/pip check"
    ln -sfn "$VENV/bin/slicemesh" "$BIN"
    rm -rf "$PREFIX/doc" && mkdir -p "$PREFIX/doc" && cp "$src/README.md" "$src"/docs/*.md "$PREFIX/doc/"
    say "installed slicemesh $("$BIN" --version | cut -d' ' -f2) in $VENV; $BIN runs it"
}

record_role() {  # $PREFIX/install.info: which roles this machine has (upgrade restarts their daemons)
    local roles=${1:-}
    [ -f "$PREFIX/install.info" ] && roles="$(sed -n 's/^roles=//p' "$PREFIX/install.info") $roles"
    roles=$(echo "$roles" | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ' | sed 's/ $//')
    local commit
    commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
    printf 'roles=%s\nversion=%s\ncommit=%s\ninstalled=%s\n' "$roles" "$("$BIN" --version | cut -d' ' -f2)" "$commit" "$(date -u +%FT%TZ)" >"$PREFIX/install.info"
}

installed_roles() { sed -n 's/^roles=//p' "$PREFIX/install.info" 2>/dev/null || true; }

yaml_get() {  # a top-level key of YAML file $1 (or $3 when absent), read with the venv's PyYAML
    "$VENV/bin/python" -c 'import sys, yaml
d = yaml.safe_load(open(sys.argv[1])) or {}
print(d.get(sys.argv[2]) or sys.argv[3])' "$1" "$2" "$3" 2>/dev/null || echo "$3"
}

config_for() {  # /etc/slicemesh/ROLE.yaml from deploy/, never over an existing one; prints "new" or "kept"
    mkdir -p "$ETC" "$STATE"
    if [ -e "$ETC/$1.yaml" ]; then echo kept; return; fi
    # agent.yaml may hold an enrol_token: readable by root only.
    install -m "$([ "$1" = agent ] && echo 0600 || echo 0644)" "$src/deploy/$1.yaml" "$ETC/$1.yaml"
    echo new
}

daemons_by_hand() {  # pids of `slicemesh controller|agent` processes from the venv that systemd did not start
    local p argv units=" "
    if systemd_running; then
        for p in $ROLES; do units="$units$(systemctl show -p MainPID --value "slicemesh-$p" 2>/dev/null || true) "; done
    fi
    for p in /proc/[0-9]*; do
        mapfile -d '' -t argv <"$p/cmdline" 2>/dev/null || continue
        if [ "${#argv[@]}" -ge 3 ] && [[ "${argv[0]}" == "$VENV/bin/"* && "${argv[1]}" == */slicemesh ]] \
            && [[ "${argv[2]}" == controller || "${argv[2]}" == agent ]] && [[ "$units" != *" ${p#/proc/} "* ]]; then
            echo -n "${p#/proc/} "
        fi
    done
    true
}

unit_start() {  # enable the unit of role $1 and (re)start it if systemd runs here; else say how to run it
    local unit="slicemesh-$1.service"
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable --quiet "$unit"
        systemctl restart "$unit" || die "systemctl restart $unit failed: journalctl -u slicemesh-$1"
        say "$unit enabled and (re)started: journalctl -u slicemesh-$1 -f"
    else
        command -v systemctl >/dev/null && systemctl enable --quiet "$unit" 2>/dev/null && say "$unit enabled: it starts at the next boot with systemd"
        say "systemd is not running here: $unit was installed but not started; run the daemon by hand:"
        say "  slicemesh $1 --config $ETC/$1.yaml"
    fi
}

install_role() {
    local role=$1 config
    ensure_debs "$role"
    check_python
    drop_old_layout
    make_venv
    install_wheel
    config=$(config_for "$role")
    if [ "$config" = kept ]; then say "kept $ETC/$role.yaml"; else say "wrote $ETC/$role.yaml (from deploy/$role.yaml)"; fi
    install -m 0644 "$src/deploy/slicemesh-$role.service" "$UNITS/slicemesh-$role.service"
    record_role "$role"
    if [ "$role" = controller ]; then
        unit_start controller
        local keys
        keys=$(yaml_get "$ETC/controller.yaml" keys_dir "$STATE/keys")
        say "keys: at its first start the controller writes its key pair and the first admin's identity to $keys:"
        say "  give $keys/controller.key (public) to every node ($ETC/controller.key) and user; keep controller.key_secret here"
        say "  slicemesh login --identity $keys/admin.identity.yaml   # as root: you are the first admin (docs/security.md)"
        return
    fi
    local key
    key=$(yaml_get "$ETC/agent.yaml" controller_key "$ETC/controller.key")
    if [ "$config" = new ] || cmp -s "$src/deploy/agent.yaml" "$ETC/agent.yaml" || [ ! -f "$key" ]; then
        # The template names node1.princeton at controller.example.org: not worth starting.
        [ -f "$key" ] || say "missing $key: copy the controller's public key (its keys_dir/controller.key) there"
        say "edit $ETC/agent.yaml (name, site, location, controller) first; then run install.sh agent again, or"
        if systemd_running; then say "  systemctl enable --now slicemesh-agent"; else say "  slicemesh agent --config $ETC/agent.yaml"; fi
    else
        unit_start agent
    fi
    say "enrolment: the agent's new key waits as pending until an operator runs \`slicemesh keys accept NODE\` on the"
    say "  controller; or set enrol_token in $ETC/agent.yaml (from \`slicemesh keys token --node NODE\`) and it enrols itself"
}

upgrade() {
    [ ! -e "$PREFIX/pyproject.toml" ] || die "$PREFIX is an old install (a copy of a checkout): replace it with install.sh controller or agent"
    [ -x "$VENV/bin/python" ] || die "slicemesh is not installed here (no $VENV): run install.sh controller or agent"
    local roles role
    roles=$(installed_roles)
    for role in $roles; do ensure_debs "$role"; done
    check_python
    drop_old_layout
    make_venv
    install_wheel
    record_role ""
    for role in $roles; do
        install -m 0644 "$src/deploy/slicemesh-$role.service" "$UNITS/slicemesh-$role.service"
        if [ -e "$ETC/$role.yaml" ]; then say "kept $ETC/$role.yaml"; else say "warning: no $ETC/$role.yaml (the $role needs one)"; fi
    done
    say "kept $STATE"
    if systemd_running; then
        systemctl daemon-reload
        for role in $roles; do
            if systemctl is-active --quiet "slicemesh-$role"; then
                systemctl restart "slicemesh-$role" || die "systemctl restart slicemesh-$role failed: journalctl -u slicemesh-$role"
                say "restarted slicemesh-$role"
            fi
        done
    fi
    local pids
    pids=$(daemons_by_hand)
    [ -z "$pids" ] || say "daemons started by hand run the old code until you restart them: pids $pids"
}

uninstall() {
    if [ "$purge" -eq 1 ] && [ -n "$(awk -v s="$STATE/" 'index($5, s) == 1' /proc/self/mountinfo)" ]; then
        die "$STATE still has mounts below it (slivers' disks?): delete the slices or stop their slivers first; nothing removed"
    fi
    local role unit
    for role in $ROLES; do
        unit="slicemesh-$role.service"
        [ -e "$UNITS/$unit" ] || continue
        if systemd_running; then
            systemctl disable --now --quiet "$unit" || true
            [ "$role" = agent ] && say "stopped slicemesh-agent; its slivers keep running (KillMode=process) until you delete them"
        elif command -v systemctl >/dev/null; then
            systemctl disable --quiet "$unit" 2>/dev/null || true
        fi
        rm -f "$UNITS/$unit" "$UNITS"/*.wants/"$unit"
        say "removed $UNITS/$unit"
    done
    systemd_running && systemctl daemon-reload
    local pids
    pids=$(daemons_by_hand)
    [ -z "$pids" ] || say "warning: daemons started by hand still run from $VENV: pids $pids (stop them)"
    if [ -L "$BIN" ] && [ "$(readlink "$BIN")" = "$VENV/bin/slicemesh" ]; then rm -f "$BIN" && say "removed $BIN"; fi
    if [ -e "$PREFIX" ]; then rm -rf "$PREFIX" && say "removed $PREFIX"; fi
    local d
    for d in "$ETC" "$STATE"; do
        [ -e "$d" ] || continue
        if [ "$purge" -eq 1 ]; then
            rm -rf --one-file-system "$d" && say "removed $d"
        else
            say "kept $d ($([ "$d" = "$ETC" ] && echo config || echo "state: the controller's database and keys, the agent's state")); install.sh uninstall --purge removes it"
        fi
    done
}

case "$action" in
    packages) [ -n "$role_arg" ] || usage; debs_for "$role_arg" ;;
    controller | agent | upgrade | uninstall)
        need_root
        work=$(mktemp -d)
        trap 'rm -rf "$work"' EXIT
        case "$action" in
            upgrade) upgrade ;;
            uninstall) uninstall ;;
            *) install_role "$action" ;;
        esac ;;
    "") usage ;;
    *) echo "install.sh: unknown action '$action' (controller, agent, upgrade, uninstall or packages)" >&2; exit 2 ;;
esac
