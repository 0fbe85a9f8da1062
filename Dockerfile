# syntax=docker/dockerfile:1
#
# pwrotate container image. Build from the repository root:
#
#   docker build --build-arg VERSION=1.0.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/example/pwrotate:1.0.0 .
#
# deploy/dockerfile_test.go checks the properties below; keep it passing.

FROM golang:1.26-bookworm AS builder
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
FROM gcr.io/distroless/static-debian12:nonroot

ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="pwrotate" \
      org.opencontainers.image.description="Bulk rotation of ECGrid user passwords" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"

COPY --from=builder /pwrotate /pwrotate

USER nonroot:nonroot
ENTRYPOINT ["/pwrotate"]
CMD ["run", "--help"]
