//go:build tools

// Package kubeapiserver pins k8s.io/kubernetes/cmd/kube-apiserver for
// build.sh; nothing imports it.
package kubeapiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
