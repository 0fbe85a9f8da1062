package deliver

import (
	"encoding/base64"
	"strings"
	"testing"

	"pwrotate/rotate/secret"
)

// TestScrub checks that a message quoting the password, raw or base64,
// whole or cut short, keeps none of it, and that other text stays.
func TestScrub(t *testing.T) {
	pw := secret.Password("Xq7#mZ2!pLr9^Tw4kV8_abcd")
	enc := base64.StdEncoding.EncodeToString([]byte(pw.Reveal()))
	short := secret.Password("Ab1!xyz")
	shortEnc := base64.StdEncoding.EncodeToString([]byte(short.Reveal()))
	for _, tc := range []struct {
		name, msg string
		pw        secret.Password
		enc       string
		want      string
	}{
		{"no password", `denied: data.password is not allowed`, pw, enc, `denied: data.password is not allowed`},
		{"raw", `value "` + pw.Reveal() + `" rejected`, pw, enc, `value "[redacted]" rejected`},
		{"base64", `{"data":{"password":"` + enc + `"}}`, pw, enc, `{"data":{"password":"[redacted]"}}`},
		{"base64 cut short", `request: {"data":{"password":"` + enc[:12] + `…`, pw, enc, `request: {"data":{"password":"[redacted]…`},
		{"raw cut short", `value "` + pw.Reveal()[:9] + `...`, pw, enc, `value "[redacted]...`},
		{"tail of the base64", `...` + enc[len(enc)-10:] + `"}}`, pw, enc, `...[redacted]"}}`},
		{"twice", enc + " and " + pw.Reveal(), pw, enc, "[redacted] and [redacted]"},
		{"a password shorter than the minimum", `value "` + short.Reveal() + `" and ` + shortEnc, short, shortEnc, `value "[redacted]" and [redacted]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := scrub(tc.msg, tc.pw, []byte(tc.enc))
			if got != tc.want {
				t.Fatalf("scrub = %q, want %q", got, tc.want)
			}
			for _, s := range []string{tc.pw.Reveal(), tc.enc} {
				for i := 0; i+scrubMin <= len(s); i++ {
					if strings.Contains(got, s[i:i+scrubMin]) {
						t.Fatalf("%q keeps %q of the password", got, s[i:i+scrubMin])
					}
				}
			}
		})
	}
}
