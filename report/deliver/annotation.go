package deliver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnotationPrefix begins the annotation that records, on a Secret, when
// pwrotate last rotated one of its keys and in which run:
//
//	pwrotate.io/rotated-<key>: 2026-05-01T03:00:12Z;run=<run>
//
// One annotation per key, so that the merge patches of two users sharing a
// Secret never overwrite each other's record. A key that cannot end an
// annotation name (longer than 55 characters, or ending in '.', '_' or
// '-'), or that begins with "sha256-", is recorded under
// pwrotate.io/rotated-sha256-<the first 16 hex digits of its sha256>.
const AnnotationPrefix = "pwrotate.io/rotated-"

// AnnotationName returns the name of the annotation that records the
// rotations of key.
func AnnotationName(key string) string {
	name := AnnotationPrefix + key
	if len(validation.IsQualifiedName(name)) == 0 && !strings.HasPrefix(key, "sha256-") {
		return name
	}
	sum := sha256.Sum256([]byte(key))
	return AnnotationPrefix + "sha256-" + hex.EncodeToString(sum[:8])
}

// annotationValue is the record of a rotation at t in run.
func annotationValue(t time.Time, run string) string {
	v := t.UTC().Format(time.RFC3339)
	if run != "" {
		v += ";run=" + run
	}
	return v
}

// parseAnnotation reads the time and the run of a rotation record.
func parseAnnotation(v string) (time.Time, string, error) {
	ts, rest, _ := strings.Cut(v, ";")
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(ts))
	if err != nil {
		return time.Time{}, "", fmt.Errorf("annotation value %q: want an RFC 3339 time first", safe(v))
	}
	run := ""
	for _, part := range strings.Split(rest, ";") {
		if r, ok := strings.CutPrefix(strings.TrimSpace(part), "run="); ok {
			run = r
		}
	}
	return t, run, nil
}

// cleanRunID keeps a run ID printable and free of the separator.
func cleanRunID(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x21 || r == 0x7f || r == ';' {
			return '_'
		}
		return r
	}, s)
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}
