//go:build tools

// Package main pins modules while the packages that import them are written.
package main

import (
	_ "filippo.io/age"
	_ "filippo.io/age/agessh"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/push"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/sethvargo/go-password/password"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/term"
	_ "golang.org/x/time/rate"
	_ "k8s.io/api/batch/v1"
	_ "k8s.io/apimachinery/pkg/runtime/serializer/json"
	_ "sigs.k8s.io/yaml"
)
