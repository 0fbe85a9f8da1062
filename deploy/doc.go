// Package deploy holds pwrotate's Kubernetes manifests (a CronJob, an Indexed
// Job, their ConfigMap and PersistentVolumeClaims, a helper pod to collect
// the output, and the ServiceAccount, Role and RoleBinding that let the
// CronJob deliver passwords to the Secrets it names) and the tests that keep
// them, and the repository's Dockerfile,
// honest: every manifest must decode strictly into its Kubernetes API type and
// keep the hardening, retry and resume properties that docs/kubernetes.md
// describes, and the recipes there must stay safe to copy (docs_test.go). The
// package has no code of its own.
package deploy
