#!/usr/bin/env bash
# Builds the kube-apiserver that the delivery tests run against, once: the
# binary is cached outside the repository, and a later call only prints its
# path. About 665 MB of modules, 5 minutes and 1.9 GB of memory on 2 cores.
#
#   export PWROTATE_KUBE_APISERVER=$(report/deliver/kubetest/build/build.sh)
#
# The tests also need etcd (Debian: apt-get install etcd-server) on PATH or
# in PWROTATE_ETCD.
set -euo pipefail
cd "$(dirname "$0")"

version=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' go.mod)
cache="${PWROTATE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pwrotate-test}"
bin="$cache/kube-apiserver-$version"
if [ ! -x "$bin" ]; then
	mkdir -p "$cache"
	echo "building kube-apiserver $version into $bin (about 5 minutes)" >&2
	start=$(date +%s)
	go build -trimpath -buildvcs=false -o "$bin.tmp.$$" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$bin.tmp.$$" "$bin"
	echo "built kube-apiserver in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin"
