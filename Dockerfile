# syntax=docker/dockerfile:1
#
# pwrotate container image. Build from the repository root:
#
#   docker build --build-arg VERSION=1.0.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/example/pwrotate:1.0.0 .
#
# deploy/dockerfile_test.go checks the properties below; keep it passing.
#
# Both base images are pinned by digest: a tag can be moved, a digest cannot,
# so a rebuild of an old commit starts from the same bases. The tag stays in
# the reference for readers (the digest wins) and in the comment above each
# FROM, with the date the digest was read. To move to a newer base, read the
# current digest and update both:
#   crane digest golang:1.26-bookworm
#   crane digest gcr.io/distroless/static-debian12:nonroot

# golang:1.26-bookworm, digest as of 2026-09-13.
FROM golang:1.26-bookworm@sha256:9fdc884aacc3bec89b20ffc69f4bb369c78210e3e4f600387b5128b12c199f81 AS builder
WORKDIR /src

# Modules in their own layer: rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify

COPY . .

# ARGs are declared inside the stage that uses them (an ARG before FROM is not
# visible here).
ARG VERSION=dev
ARG COMMIT=unknown

# Static binary (distroless/static has no libc), no local paths in it.
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /pwrotate .

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot
# (uid/gid 65532), no shell, no package manager.
# gcr.io/distroless/static-debian12:nonroot, digest as of 2026-08-26.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab

ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="pwrotate" \
      org.opencontainers.image.description="Bulk rotation of ECGrid user passwords" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"

COPY --from=builder /pwrotate /pwrotate

# Numeric, not "nonroot": with a user name the kubelet cannot tell that the
# image is non-root and refuses to start a pod that sets runAsNonRoot without
# runAsUser. 65532 is distroless' nonroot.
USER 65532:65532
ENTRYPOINT ["/pwrotate"]
CMD ["run", "--help"]
