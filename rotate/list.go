package rotate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Listing defaults and bounds.
const (
	// DefaultPageSize is the page size ListUsers asks for.
	DefaultPageSize = 100
	// MaxListedUsers is the most users ListUsers accepts by default: the
	// input's record limit, so that a listing always makes a valid input.
	MaxListedUsers = 10_000_000
	// maxListBody bounds one page's answer.
	maxListBody = 8 << 20
	// MaxListedField bounds each text field of a listed user (login,
	// email, names, authLevel, status), as the input CSV bounds its fields.
	MaxListedField = 1 << 10
)

// Statuses are the ECGrid user statuses, as POST /v2/users/list takes them.
var Statuses = []string{"Development", "Active", "Preproduction", "Suspended", "Terminated"}

// DefaultStatus is the status a listing selects unless told otherwise.
const DefaultStatus = "Active"

// UserFilter selects the users POST /v2/users/list returns. A zero field
// selects every user; Status "" means any status. Its JSON form is the
// request body's filter members (and what run.json records).
type UserFilter struct {
	NetworkID int    `json:"networkId,omitempty"`
	MailboxID int    `json:"mailboxId,omitempty"`
	AuthLevel string `json:"authLevel,omitempty"`
	Status    string `json:"status,omitempty"`
}

// ParseStatus returns the ECGrid status named s (case-insensitively), ""
// for "any", or an error naming the statuses.
func ParseStatus(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "any") {
		return "", nil
	}
	for _, st := range Statuses {
		if strings.EqualFold(s, st) {
			return st, nil
		}
	}
	return "", fmt.Errorf("status %q: want one of %s, or any", s, strings.Join(Statuses, ", "))
}

// ParseLevelName returns the ECGrid name of the AuthLevel s
// (case-insensitively), "" for an empty s, or an error naming the levels.
func ParseLevelName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	l := ParseAuthLevel(s)
	if l == LevelUnknown {
		names := make([]string, 0, LevelRoot)
		for l := LevelRoot; l >= LevelGeneral; l-- {
			names = append(names, l.String())
		}
		return "", fmt.Errorf("auth level %q: want one of %s", s, strings.Join(names, ", "))
	}
	return l.String(), nil
}

// Check validates f: IDs in 0..2147483647 (0: any), a known AuthLevel and
// status name (or empty) in their ECGrid spelling.
func (f UserFilter) Check() error {
	if f.NetworkID < 0 || f.NetworkID > maxUserID {
		return fmt.Errorf("network %d: want an ID between 1 and %d", f.NetworkID, maxUserID)
	}
	if f.MailboxID < 0 || f.MailboxID > maxUserID {
		return fmt.Errorf("mailbox %d: want an ID between 1 and %d", f.MailboxID, maxUserID)
	}
	if l, err := ParseLevelName(f.AuthLevel); err != nil {
		return err
	} else if l != f.AuthLevel {
		return fmt.Errorf("auth level %q: spell it %q", f.AuthLevel, l)
	}
	if f.Status != "" {
		if st, err := ParseStatus(f.Status); err != nil || st != f.Status {
			return fmt.Errorf("status %q: want one of %s", f.Status, strings.Join(Statuses, ", "))
		}
	}
	return nil
}

// String returns the filter as run --select takes it:
// "network=1,mailbox=5,auth-level=Root,status=Active"; status=any when
// Status is empty.
func (f UserFilter) String() string {
	var parts []string
	if f.NetworkID != 0 {
		parts = append(parts, "network="+strconv.Itoa(f.NetworkID))
	}
	if f.MailboxID != 0 {
		parts = append(parts, "mailbox="+strconv.Itoa(f.MailboxID))
	}
	if f.AuthLevel != "" {
		parts = append(parts, "auth-level="+f.AuthLevel)
	}
	st := f.Status
	if st == "" {
		st = "any"
	}
	return strings.Join(append(parts, "status="+st), ",")
}

const maxUserID = 1<<31 - 1

// User is one user as POST /v2/users/list describes it (ECGrid's
// UserIDInfo, without "created"). Strings are as the server sent them:
// make them safe before showing them.
type User struct {
	UserID    int
	Login     string
	Email     string
	FirstName string
	LastName  string
	NetworkID int // 0: not given
	MailboxID int // 0: not given
	AuthLevel string
	Status    string
}

// ListOptions tunes ListUsers. Zero values take the defaults.
type ListOptions struct {
	// PageSize is the recordsPerPage asked for (default DefaultPageSize).
	PageSize int
	// MaxUsers is the most distinct users accepted (default
	// MaxListedUsers); a listing with more is an error.
	MaxUsers int
	// OnPage, when set, is called after each page with the page number,
	// the users it held, and the distinct users kept so far.
	OnPage func(pageNo, pageUsers, total int)
	// OnDrop, when set, is called for each listed user that ListUsers
	// dropped because its field (named as in the answer: "networkId",
	// "mailboxId", "authLevel" or "status") contradicts the filter.
	OnDrop func(u User, field string)
}

// ErrPageNoIgnored reports a server that answers the same users whatever
// pageNo asks for.
var ErrPageNoIgnored = errors.New("the server ignores pageNo")

// ErrFilterUnchecked reports a listed user that lacks a field the filter
// selects on: whether the server applied the filter cannot be checked.
var ErrFilterUnchecked = errors.New("cannot check that the server applied the filter")

// Outside returns "" when u is in f, else the name of u's first field
// ("networkId", "mailboxId", "authLevel", "status") whose value
// contradicts f. The server is not trusted to have applied the filter it
// was sent: a server that ignores it lists users outside it. A field that
// f selects on and u lacks (absent, null, empty or 0, which User cannot
// tell apart) is an error naming it (ErrFilterUnchecked): guessing would
// either rotate users outside the filter or silently skip users in it.
// Names compare case-insensitively; an AuthLevel name that is not known
// contradicts any AuthLevel.
func (f UserFilter) Outside(u User) (string, error) {
	lacks := func(field, want string) (string, error) {
		return "", fmt.Errorf("user %d has no %s, while the filter selects %s %s: %w; refusing to guess",
			u.UserID, field, field, want, ErrFilterUnchecked)
	}
	if f.NetworkID != 0 && u.NetworkID == 0 {
		return lacks("networkId", strconv.Itoa(f.NetworkID))
	}
	if f.MailboxID != 0 && u.MailboxID == 0 {
		return lacks("mailboxId", strconv.Itoa(f.MailboxID))
	}
	if f.AuthLevel != "" && strings.TrimSpace(u.AuthLevel) == "" {
		return lacks("authLevel", f.AuthLevel)
	}
	if f.Status != "" && strings.TrimSpace(u.Status) == "" {
		return lacks("status", f.Status)
	}
	switch {
	case f.NetworkID != 0 && u.NetworkID != f.NetworkID:
		return "networkId", nil
	case f.MailboxID != 0 && u.MailboxID != f.MailboxID:
		return "mailboxId", nil
	case f.AuthLevel != "" && (ParseAuthLevel(u.AuthLevel) == LevelUnknown || ParseAuthLevel(u.AuthLevel) != ParseAuthLevel(f.AuthLevel)):
		return "authLevel", nil
	case f.Status != "" && !strings.EqualFold(strings.TrimSpace(u.Status), f.Status):
		return "status", nil
	}
	return "", nil
}

// ListUsers lists the users that f selects (POST /v2/users/list), page by
// page, through the client's retries, pacing and bounds. It returns each
// user once, in the order the server listed them.
//
// Each listed user is checked against f (UserFilter.Outside): one whose
// fields contradict f is dropped, reported to opt.OnDrop and counted in
// one warning log line at the end; one lacking a field f selects on makes
// the listing an error naming the field (ErrFilterUnchecked). A text field
// over MaxListedField bytes is an error naming the user and the field.
//
// A server may cap the page below the size asked for without saying so, so
// only an empty page ends the listing, and after a short first page the
// following pages ask for that page's size. A page that brings only users
// already listed means the server ignores pageNo: that is an error
// (ErrPageNoIgnored), never a loop or a short list. Every error names the
// page; one that stopped on ctx unwraps to ctx's error.
func (c *Client) ListUsers(ctx context.Context, f UserFilter, opt ListOptions) ([]User, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	size := opt.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	limit := opt.MaxUsers
	if limit <= 0 {
		limit = MaxListedUsers
	}
	seen := make(map[int]struct{})
	var users []User
	dropped := make(map[string]int)
	ndropped := 0
	// Every page before the empty one brings at least one new user, so
	// limit+1 pages are enough to list limit users and see the end.
	for page := 1; page <= limit+1; page++ {
		got, o := c.listPage(ctx, f, page, size)
		if !o.OK {
			return nil, &wrapped{msg: "page " + strconv.Itoa(page) + ": " + o.Err.Error(), err: o.Err}
		}
		if len(got) == 0 {
			if ndropped > 0 {
				c.log.LogAttrs(ctx, slog.LevelWarn, "the server listed users outside the filter: dropped them",
					slog.Int("dropped", ndropped), slog.String("filter", f.String()),
					slog.Int("networkId", dropped["networkId"]), slog.Int("mailboxId", dropped["mailboxId"]),
					slog.Int("authLevel", dropped["authLevel"]), slog.Int("status", dropped["status"]),
					slog.Int("kept", len(users)))
			}
			return users, nil
		}
		if page == 1 && len(got) < size {
			// A short first page is the last one or a cap the server did
			// not announce. Ask for that size from now on, so that the
			// offsets agree whether the server computes them from the size
			// asked or from the size it answers.
			size = len(got)
		}
		fresh := 0
		for _, u := range got {
			if _, dup := seen[u.UserID]; dup {
				continue
			}
			seen[u.UserID] = struct{}{}
			fresh++
			field, err := f.Outside(u)
			if err != nil {
				return nil, fmt.Errorf("page %d: %w", page, err)
			}
			if field != "" {
				dropped[field]++
				ndropped++
				if opt.OnDrop != nil {
					opt.OnDrop(u, field)
				}
				continue
			}
			users = append(users, u)
		}
		if fresh == 0 {
			return nil, fmt.Errorf("page %d: all %d users were already listed: %w (it answers the same page again); refusing to loop or return a short list",
				page, len(got), ErrPageNoIgnored)
		}
		// Dropped users count too: they cost the seen set its memory.
		if len(seen) > limit {
			return nil, fmt.Errorf("page %d: more than %d users: over the input limit; narrow the filter", page, limit)
		}
		if opt.OnPage != nil {
			opt.OnPage(page, len(got), len(users))
		}
	}
	return nil, fmt.Errorf("page %d: more than %d pages without an empty one", limit+2, limit+1)
}

// listPage fetches one page.
func (c *Client) listPage(ctx context.Context, f UserFilter, pageNo, size int) ([]User, Outcome) {
	body, err := json.Marshal(struct {
		UserFilter
		PageNo         int `json:"pageNo"`
		RecordsPerPage int `json:"recordsPerPage"`
	}{f, pageNo, size})
	if err != nil {
		return nil, Outcome{Err: fmt.Errorf("encoding the request: %w", err)}
	}
	var users []User
	out := c.call(ctx, call{
		endpoint: endpointList,
		method:   http.MethodPost,
		url:      c.endpointURL("/v2/users/list"),
		body:     body,
		maxBody:  maxListBody,
		check: func(a answer) error {
			var err error
			users, err = parseUserPage(a.data)
			return err
		},
	})
	return users, out
}

// parseUserPage reads the data of a users page: an array of users, or an
// object holding exactly one array, of users.
func parseUserPage(data json.RawMessage) ([]User, error) {
	d := bytes.TrimSpace(data)
	if len(d) > 0 && d[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(d, &obj); err != nil {
			return nil, fmt.Errorf("data: unreadable object: %w", err)
		}
		var names []string
		var arr json.RawMessage
		for name, v := range obj {
			if v = bytes.TrimSpace(v); len(v) > 0 && v[0] == '[' {
				names = append(names, name)
				arr = v
			}
		}
		if len(names) != 1 {
			sort.Strings(names)
			return nil, fmt.Errorf("data is an object holding %d arrays (%s), not one array of users", len(names), clean(strings.Join(names, ", "), 60))
		}
		d = arr
	}
	if len(d) == 0 || d[0] != '[' {
		return nil, fmt.Errorf("data is %s, not an array of users or an object holding one", jsonKind(d))
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(d, &raws); err != nil {
		return nil, fmt.Errorf("data: unreadable array: %w", err)
	}
	users := make([]User, 0, len(raws))
	for i, raw := range raws {
		u, err := parseUser(raw)
		if err != nil {
			return nil, fmt.Errorf("user %d of the page: %w", i+1, err)
		}
		users = append(users, u)
	}
	return users, nil
}

// userInfo is ECGrid's UserIDInfo, every member raw so that one of an
// unexpected type is reported by name.
type userInfo struct {
	UserID    json.RawMessage `json:"userId"`
	Login     json.RawMessage `json:"login"`
	Email     json.RawMessage `json:"email"`
	FirstName json.RawMessage `json:"firstName"`
	LastName  json.RawMessage `json:"lastName"`
	NetworkID json.RawMessage `json:"networkId"`
	MailboxID json.RawMessage `json:"mailboxId"`
	AuthLevel json.RawMessage `json:"authLevel"`
	Status    json.RawMessage `json:"status"`
}

func parseUser(raw json.RawMessage) (User, error) {
	raw = bytes.TrimSpace(raw)
	var info userInfo
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &info) != nil {
		return User{}, fmt.Errorf("%s, not an object", jsonKind(raw))
	}
	id, ok := parseJSONID(info.UserID, false)
	if !ok {
		return User{}, errors.New("no valid userId")
	}
	u := User{
		UserID:    id,
		Login:     jsonScalar(info.Login),
		Email:     jsonScalar(info.Email),
		FirstName: jsonScalar(info.FirstName),
		LastName:  jsonScalar(info.LastName),
		AuthLevel: jsonScalar(info.AuthLevel),
		Status:    jsonScalar(info.Status),
	}
	for _, t := range []struct {
		name, value string
	}{{"login", u.Login}, {"email", u.Email}, {"firstName", u.FirstName}, {"lastName", u.LastName}, {"authLevel", u.AuthLevel}, {"status", u.Status}} {
		if len(t.value) > MaxListedField {
			// Refused, not cut: the listing becomes the run's input, where a
			// cut login would be matched against --protect globs as another
			// login, and no ECGrid field is this long.
			return User{}, fmt.Errorf("user %d: %s is over 1 KiB (%d bytes)", id, t.name, len(t.value))
		}
	}
	if u.NetworkID, ok = parseJSONID(info.NetworkID, true); !ok {
		return User{}, fmt.Errorf("user %d: networkId is not an ID", id)
	}
	if u.MailboxID, ok = parseJSONID(info.MailboxID, true); !ok {
		return User{}, fmt.Errorf("user %d: mailboxId is not an ID", id)
	}
	return u, nil
}

// parseJSONID reads an ID in 1..2147483647 sent as a number or a string of
// digits; with optional, a missing or null member, 0 or "" give 0.
func parseJSONID(raw json.RawMessage, optional bool) (int, bool) {
	s := jsonScalar(raw)
	if s == "" || s == "0" {
		return 0, optional && (len(raw) == 0 || string(raw) == "null" || s == "0" || string(raw) == `""`)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 || n > maxUserID {
		return 0, false
	}
	return int(n), true
}

// jsonKind names the kind of a raw JSON value for an error message.
func jsonKind(d []byte) string {
	switch {
	case len(d) == 0:
		return "missing"
	case string(d) == "null":
		return "null"
	case d[0] == '"':
		return "a string"
	case d[0] == 't' || d[0] == 'f':
		return "a boolean"
	case d[0] == '{':
		return "an object"
	case d[0] == '[':
		return "an array"
	default:
		return "a number"
	}
}
