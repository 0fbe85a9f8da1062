package rotate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"pwrotate/rotate/secret"
)

// maxKeyLength bounds an API key read from an answer.
const maxKeyLength = 512

// maxUnreadKey bounds the body of a key-generate answer kept as received
// when it holds no key that parses.
const maxUnreadKey = 4 << 10

// APIKey reads the live API key of userID (GET /v2/users/key/{id},
// NetworkAdmin or higher). It changes nothing, so every failure is retried
// as the answers allow.
func (c *Client) APIKey(ctx context.Context, userID int) (secret.Password, Outcome) {
	return c.keyCall(ctx, userID, call{
		endpoint: endpointKey,
		method:   http.MethodGet,
		url:      c.endpointURL("/v2/users/key/" + strconv.Itoa(userID)),
	})
}

// GenerateAPIKey replaces the API key of userID (POST
// /v2/users/key-generate/{id}) and returns the new one; the old key stops
// working at once. An attempt whose answer is lost (timeout, dropped
// connection, 5xx) is NOT retried, since a second generation would replace
// the key again: the Outcome is then Unknown, and the caller settles it by
// reading the key back (APIKey). Attempts that were surely not applied (429,
// a request never sent) are retried.
//
// A success (2xx) whose body holds no key that parses (a text body, another
// JSON shape) may still have replaced the key: the Outcome is Unknown and
// unread is that body as received (at most 4 KiB), for the caller to seal:
// it may be the new key in a form we do not read. Neither the body nor any
// other text of the server's is put into the Outcome's error.
func (c *Client) GenerateAPIKey(ctx context.Context, userID int) (key, unread secret.Password, o Outcome) {
	var raw []byte
	defer func() { clear(raw) }()
	key, o = c.keyCall(ctx, userID, call{
		endpoint: endpointKeyGen,
		method:   http.MethodPost,
		url:      c.endpointURL("/v2/users/key-generate/" + strconv.Itoa(userID)),
		once:     true,
		unread: func(body []byte) {
			clear(raw)
			raw = append(raw[:0], body[:min(len(body), maxUnreadKey)]...)
		},
	})
	if !o.OK && len(bytes.TrimSpace(raw)) > 0 {
		unread = secret.Password(raw)
	}
	return key, unread, o
}

func (c *Client) keyCall(ctx context.Context, userID int, cl call) (secret.Password, Outcome) {
	if userID <= 0 {
		return "", Outcome{Err: fmt.Errorf("user id %d: must be positive", userID)}
	}
	var key secret.Password
	cl.userID = userID
	cl.onOK = func(a answer) {
		key, _ = parseKey(a.data) // judge checked it parses
	}
	out := c.call(ctx, cl)
	if !out.OK {
		key = ""
	}
	return key, out
}

// parseKey reads an API key from an answer's data: a JSON string of
// printable ASCII without spaces, as ECGrid issues them. Its errors never
// hold the data.
func parseKey(data json.RawMessage) (secret.Password, error) {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return "", errors.New("data is not a string")
	}
	if s == "" {
		return "", errors.New("the key is empty")
	}
	if len(s) > maxKeyLength {
		return "", fmt.Errorf("the key is longer than %d bytes", maxKeyLength)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return "", errors.New("the key holds a space, control or non-ASCII character")
		}
	}
	return secret.Password(s), nil
}
