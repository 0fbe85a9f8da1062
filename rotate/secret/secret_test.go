package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestPasswordNeverPrints(t *testing.T) {
	const pw = "Tr0ub4dor&3-correct-horse"
	p := Password(pw)
	type holder struct {
		User     int
		Password Password
	}
	h := holder{User: 7, Password: p}

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "pw", p, "h", h)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "pw", p, "h", h)
	js, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}

	outputs := map[string]string{
		"%s":    fmt.Sprintf("%s", p),
		"%v":    fmt.Sprintf("%v", p),
		"%q":    fmt.Sprintf("%q", p),
		"%x":    fmt.Sprintf("%x", p),
		"%#v":   fmt.Sprintf("%#v", h),
		"%+v":   fmt.Sprintf("%+v", h),
		"error": fmt.Errorf("wrapping %v", p).Error(),
		"json":  string(js),
		"slog":  logged.String(),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			if strings.Contains(out, pw) || strings.Contains(out, fmt.Sprintf("%x", pw)) {
				t.Fatalf("%s leaked the password: %s", name, out)
			}
			if !strings.Contains(out, Redacted) {
				t.Fatalf("%s does not say %s: %s", name, Redacted, out)
			}
		})
	}
	if p.Reveal() != pw {
		t.Fatalf("Reveal changed the password")
	}
}
