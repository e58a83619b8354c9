#!/usr/bin/env bash
# Install slicemesh under /opt/slicemesh with its systemd units (run as root from a checkout).
#   deploy/install.sh controller   # on the controller machine
#   deploy/install.sh agent        # on every node (edit /etc/slicemesh/agent.yaml first)
set -euo pipefail
role=${1:?usage: install.sh controller|agent}
src=$(cd "$(dirname "$0")/.." && pwd)
if [ "$src" != /opt/slicemesh ]; then
    mkdir -p /opt/slicemesh
    cp -a "$src/." /opt/slicemesh/
fi
make -C /opt/slicemesh setup
mkdir -p /etc/slicemesh /var/lib/slicemesh
[ -f "/etc/slicemesh/$role.yaml" ] || cp "/opt/slicemesh/deploy/$role.yaml" "/etc/slicemesh/$role.yaml"
cp "/opt/slicemesh/deploy/slicemesh-$role.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable --now "slicemesh-$role.service"
systemctl --no-pager status "slicemesh-$role.service" || true
