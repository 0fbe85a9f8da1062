package rotate

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"pwrotate/rotate/ecgridsim"
)

const (
	listLowKey = "list-test-low-key-8a7e61"
)

// newListSim returns a simulator holding GenerateDirectory(n, 3), with
// testKey (NetworkAdmin) and listLowKey (NetworkUser).
func newListSim(t *testing.T, n int) (*ecgridsim.Server, string) {
	t.Helper()
	sim := ecgridsim.New()
	sim.AddKey(testKey, 7, "NetworkAdmin")
	sim.AddKey(listLowKey, 8, "NetworkUser")
	for _, u := range ecgridsim.GenerateDirectory(n, 3) {
		sim.AddDirectoryUser(u)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

// sameUsers fails t unless got holds exactly the users of want, each once,
// with the same fields.
func sameUsers(t *testing.T, got []User, want []ecgridsim.DirUser) {
	t.Helper()
	got = slices.Clone(got)
	slices.SortFunc(got, func(a, b User) int { return a.UserID - b.UserID })
	if len(got) != len(want) {
		t.Fatalf("listed %d users, the simulator holds %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g != (User{w.UserID, w.Login, w.Email, w.FirstName, w.LastName, w.NetworkID, w.MailboxID, w.AuthLevel, w.Status}) {
			t.Fatalf("user %d: listed %+v, the simulator holds %+v", w.UserID, g, w)
		}
	}
}

func TestListUsersMatchesTheSimulator(t *testing.T) {
	sim, url := newListSim(t, 600)
	filter := UserFilter{NetworkID: 1, Status: "Active"}
	truth := sim.Directory(ecgridsim.ListFilter{NetworkID: 1, Status: "Active"})
	cases := []struct {
		name     string
		behavior ecgridsim.ListBehavior
		faults   []ecgridsim.Fault
		filter   UserFilter
		truth    []ecgridsim.DirUser
	}{
		{name: "plain", filter: filter, truth: truth},
		{name: "page cap below the size asked", behavior: ecgridsim.ListBehavior{PageCap: 17}, filter: filter, truth: truth},
		{name: "page cap, offsets by the size asked", behavior: ecgridsim.ListBehavior{PageCap: 17, OffsetByAsked: true}, filter: filter, truth: truth},
		{name: "data object", behavior: ecgridsim.ListBehavior{Shape: ecgridsim.ListObject, PageCap: 40}, filter: filter, truth: truth},
		{name: "503 and 429 faults", behavior: ecgridsim.ListBehavior{PageCap: 50},
			faults: []ecgridsim.Fault{
				{Endpoint: "list", Kind: ecgridsim.HTMLError, Times: 2},
				{Endpoint: "list", Kind: ecgridsim.TooManyRequests, RetryAfter: "0"},
				{Endpoint: "list", Kind: ecgridsim.Problem, Status: 502},
			}, filter: filter, truth: truth},
		{name: "status any, mailbox and level", filter: UserFilter{MailboxID: 101, AuthLevel: "MailboxUser"},
			truth: sim.Directory(ecgridsim.ListFilter{MailboxID: 101, AuthLevel: "MailboxUser"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sim.SetListBehavior(c.behavior)
			for _, f := range c.faults {
				sim.Inject(f)
			}
			e := newTestClient(t, url, func(cfg *Config) { cfg.MaxAttempts = 5 })
			calls0 := sim.Count("list")
			var pages, last int
			users, err := e.c.ListUsers(context.Background(), c.filter, ListOptions{OnPage: func(p, n, total int) {
				pages, last = p, total
			}})
			if err != nil {
				t.Fatal(err)
			}
			sameUsers(t, users, c.truth)
			if last != len(c.truth) {
				t.Errorf("OnPage saw %d users at the end, want %d", last, len(c.truth))
			}
			calls := sim.Count("list") - calls0
			if e.pacer.waits != calls {
				t.Errorf("%d list calls, %d paced", calls, e.pacer.waits)
			}
			faulted := 0
			for _, f := range c.faults {
				faulted += max(f.Times, 1)
			}
			if want := pages + 1 + faulted; calls != want {
				t.Errorf("%d calls for %d pages, an empty one and %d faults", calls, pages, faulted)
			}
			if sim.PendingFaults() != 0 {
				t.Error("faults left unused")
			}
			if len(c.faults) > 0 && len(e.pacer.throttles) == 0 {
				t.Error("a 429 did not throttle the pacer")
			}
		})
	}
	if len(truth) < 100 {
		t.Fatalf("only %d users in network 1: the test pages too little", len(truth))
	}
}

func TestListUsersRequestBody(t *testing.T) {
	api := newFakeAPI(t, reply(200, `{"success":true,"data":[{"userId":5,"networkId":1,"authLevel":"Root","status":"Active"}]}`), reply(200, `{"success":true,"data":[]}`))
	e := newTestClient(t, api.srv.URL, nil)
	users, err := e.c.ListUsers(context.Background(), UserFilter{NetworkID: 1, AuthLevel: "Root", Status: "Active"}, ListOptions{})
	if err != nil || len(users) != 1 || users[0].UserID != 5 {
		t.Fatalf("%v %v", users, err)
	}
	reqs := api.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	for i, r := range reqs {
		var body map[string]any
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatal(err)
		}
		// The first page was short: the second asks for its size.
		size := map[int]float64{0: 100, 1: 1}[i]
		want := map[string]any{"networkId": 1.0, "authLevel": "Root", "status": "Active", "pageNo": float64(i + 1), "recordsPerPage": size}
		if r.method != http.MethodPost || r.path != "/v2/users/list" || r.key != testKey || r.ctype != "application/json" || !mapsEqual(body, want) {
			t.Fatalf("request %d: %s %s %s %v", i, r.method, r.path, r.ctype, body)
		}
	}
}

func mapsEqual(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestListUsersRefusals(t *testing.T) {
	sim, url := newListSim(t, 60)
	t.Run("ignored pageNo", func(t *testing.T) {
		sim.SetListBehavior(ecgridsim.ListBehavior{IgnorePageNo: true, PageCap: 10})
		defer sim.SetListBehavior(ecgridsim.ListBehavior{})
		e := newTestClient(t, url, nil)
		calls0 := sim.Count("list")
		_, err := e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{})
		if !errors.Is(err, ErrPageNoIgnored) || !strings.Contains(err.Error(), "page 2") {
			t.Fatalf("err = %v", err)
		}
		if n := sim.Count("list") - calls0; n != 2 {
			t.Fatalf("%d calls, want 2", n)
		}
	})
	t.Run("over the user limit", func(t *testing.T) {
		e := newTestClient(t, url, nil)
		_, err := e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{PageSize: 7, MaxUsers: 10})
		if err == nil || !strings.Contains(err.Error(), "page 2: more than 10 users") {
			t.Fatalf("err = %v", err)
		}
	})
	for _, c := range []struct {
		name  string
		shape ecgridsim.ListShape
		want  string
	}{
		{"two arrays", ecgridsim.ListTwoArrays, "page 1: data is an object holding 2 arrays (links, users)"},
		{"a string", ecgridsim.ListString, "page 1: data is a string, not an array of users"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sim.SetListBehavior(ecgridsim.ListBehavior{Shape: c.shape})
			defer sim.SetListBehavior(ecgridsim.ListBehavior{})
			e := newTestClient(t, url, nil)
			calls0 := sim.Count("list")
			_, err := e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if n := sim.Count("list") - calls0; n != 1 {
				t.Fatalf("%d calls: an unreadable page is not retried", n)
			}
		})
	}
	for _, c := range []struct{ name, key, want string }{
		{"401 stops", "wrong-key-but-long-enough-123", "HTTP 401 InvalidAPIKey"},
		{"403 stops", listLowKey, "HTTP 403 AccessDenied"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestClient(t, url, func(cfg *Config) { cfg.APIKey = c.key })
			calls0 := sim.Count("list")
			_, err := e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), c.key) {
				t.Fatalf("err = %v", err)
			}
			if n := sim.Count("list") - calls0; n != 1 {
				t.Fatalf("%d calls after a %s", n, c.want)
			}
		})
	}
	t.Run("bad filter", func(t *testing.T) {
		e := newTestClient(t, url, nil)
		calls0 := sim.Count("list")
		if _, err := e.c.ListUsers(context.Background(), UserFilter{Status: "active"}, ListOptions{}); err == nil {
			t.Fatal("status spelled in lower case was sent")
		}
		if sim.Count("list") != calls0 {
			t.Fatal("a bad filter was sent")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		e := newTestClient(t, url, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.c.ListUsers(ctx, UserFilter{}, ListOptions{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestListUsersBadAnswers(t *testing.T) {
	big := `{"success":true,"data":[` + strings.Repeat(`{"userId":1,"login":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},`, 9<<20/80) + `{"userId":2}]}`
	cases := []struct {
		name, body string
		status     int
		want       string
		attempts   int
	}{
		{"user without id", `{"success":true,"data":[{"userId":3},{"login":"x"}]}`, 200, "page 1: user 2 of the page: no valid userId", 1},
		{"user id out of range", `{"success":true,"data":[{"userId":2147483648}]}`, 200, "no valid userId", 1},
		{"user not an object", `{"success":true,"data":[7]}`, 200, "user 1 of the page: a number, not an object", 1},
		{"bad network", `{"success":true,"data":[{"userId":3,"networkId":"net"}]}`, 200, "user 3: networkId is not an ID", 1},
		{"data null", `{"success":true,"data":null}`, 200, "page 1: data is null", 1},
		{"object without array", `{"success":true,"data":{"total":0}}`, 200, "holding 0 arrays", 1},
		{"too large", big, 200, "larger than 8 MiB", 1},
		{"login over 1 KiB", `{"success":true,"data":[{"userId":3,"login":"` + strings.Repeat("x", 4<<20) + `"}]}`, 200, "user 3: login is over 1 KiB (4194304 bytes)", 1},
		{"email over 1 KiB", `{"success":true,"data":[{"userId":3,"email":"` + strings.Repeat("é", 513) + `"}]}`, 200, "user 3: email is over 1 KiB (1026 bytes)", 1},
		{"last name over 1 KiB", `{"success":true,"data":[{"userId":4,"lastName":"` + strings.Repeat("\\u00e9", 513) + `"}]}`, 200, "user 4: lastName is over 1 KiB", 1},
		{"status over 1 KiB", `{"success":true,"data":[{"userId":5,"status":"` + strings.Repeat("A", 1025) + `"}]}`, 200, "user 5: status is over 1 KiB", 1},
		{"redirect", "", 307, "redirect", 1},
		{"success false", `{"success":false,"errorCode":"InvalidParameter","message":"bad"}`, 200, "InvalidParameter", 1},
		{"html 502", "<html><title>Bad gateway</title></html>", 502, "Bad gateway", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := reply(c.status, c.body)
			if c.status == 307 {
				h = reply(307, "", "Location", "https://elsewhere.example/v2/users/list")
			}
			api := newFakeAPI(t, h)
			// A long timeout: 9 MiB under the race detector is slow.
			e := newTestClient(t, api.srv.URL, func(cfg *Config) { cfg.Timeout = time.Minute })
			_, err := e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			checkMessage(t, strings.TrimPrefix(err.Error(), "page 1: "))
			if n := len(api.requests()); n != c.attempts {
				t.Fatalf("%d requests, want %d", n, c.attempts)
			}
		})
	}
}

func TestUserFilter(t *testing.T) {
	for _, c := range []struct {
		f    UserFilter
		str  string
		fail bool
	}{
		{UserFilter{Status: "Active"}, "status=Active", false},
		{UserFilter{}, "status=any", false},
		{UserFilter{NetworkID: 1, MailboxID: 5, AuthLevel: "TPUser", Status: "Suspended"}, "network=1,mailbox=5,auth-level=TPUser,status=Suspended", false},
		{UserFilter{NetworkID: -1}, "", true},
		{UserFilter{AuthLevel: "root"}, "", true},
		{UserFilter{AuthLevel: "Overlord"}, "", true},
		{UserFilter{Status: "Sleeping"}, "", true},
	} {
		t.Run(c.str, func(t *testing.T) {
			err := c.f.Check()
			if (err != nil) != c.fail {
				t.Fatalf("Check() = %v", err)
			}
			if !c.fail && c.f.String() != c.str {
				t.Fatalf("String() = %q", c.f.String())
			}
		})
	}
	for in, want := range map[string]string{"active": "Active", " TERMINATED ": "Terminated", "Any": ""} {
		if got, err := ParseStatus(in); err != nil || got != want {
			t.Errorf("ParseStatus(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseStatus("gone"); err == nil || !strings.Contains(err.Error(), "Preproduction") {
		t.Errorf("ParseStatus(gone) = %v", err)
	}
	if got, err := ParseLevelName("networkadmin"); err != nil || got != "NetworkAdmin" {
		t.Errorf("ParseLevelName = %q, %v", got, err)
	}
}

// TestListUsersFieldBound: a text field of exactly 1 KiB is kept whole; a
// server answering a 4 MiB login on every page stops the listing at the
// first page instead of holding the logins of every page.
func TestListUsersFieldBound(t *testing.T) {
	full := strings.Repeat("é", MaxListedField/2)
	api := newFakeAPI(t, reply(200, `{"success":true,"data":[{"userId":3,"login":"`+full+`","firstName":"`+full+`"}]}`),
		reply(200, `{"success":true,"data":[]}`))
	e := newTestClient(t, api.srv.URL, nil)
	users, err := e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{})
	if err != nil || len(users) != 1 || users[0].Login != full || users[0].FirstName != full {
		t.Fatalf("%d users, %v", len(users), err)
	}

	page := 0
	huge := strings.Repeat("x", 4<<20)
	api = newFakeAPI(t, func(w http.ResponseWriter, _ *http.Request) {
		page++
		if page > 3 {
			_, _ = io.WriteString(w, `{"success":true,"data":[]}`)
			return
		}
		_, _ = io.WriteString(w, `{"success":true,"data":[{"userId":`+strconv.Itoa(page)+`,"login":"`+huge+`"}]}`)
	})
	e = newTestClient(t, api.srv.URL, func(cfg *Config) { cfg.Timeout = time.Minute })
	_, err = e.c.ListUsers(context.Background(), UserFilter{}, ListOptions{PageSize: 1})
	if err == nil || !strings.Contains(err.Error(), "page 1: user 1 of the page: user 1: login is over 1 KiB") {
		t.Fatalf("err = %v", err)
	}
	if n := len(api.requests()); n != 1 {
		t.Fatalf("%d pages read after an over-long login", n)
	}
}

// TestListUsersDropsUsersOutsideTheFilter: against a server that ignores
// the filter, the listing keeps exactly the users in it, drops every other
// one (each reported once, with a field that really contradicts the
// filter) and says how many in one warning.
func TestListUsersDropsUsersOutsideTheFilter(t *testing.T) {
	sim, url := newListSim(t, 600)
	sim.SetListBehavior(ecgridsim.ListBehavior{IgnoreFilter: true, PageCap: 45})
	all := sim.Directory(ecgridsim.ListFilter{})
	for _, c := range []struct {
		name   string
		filter UserFilter
		truth  ecgridsim.ListFilter
	}{
		{"network and status", UserFilter{NetworkID: 1, Status: "Active"}, ecgridsim.ListFilter{NetworkID: 1, Status: "Active"}},
		{"status any", UserFilter{NetworkID: 2}, ecgridsim.ListFilter{NetworkID: 2}},
		{"mailbox and level", UserFilter{NetworkID: 1, MailboxID: 101, AuthLevel: "MailboxUser", Status: "Active"},
			ecgridsim.ListFilter{NetworkID: 1, MailboxID: 101, AuthLevel: "MailboxUser", Status: "Active"}},
		{"status alone", UserFilter{Status: "Suspended"}, ecgridsim.ListFilter{Status: "Suspended"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			truth := sim.Directory(c.truth)
			if len(truth) < 3 || len(all)-len(truth) < 100 {
				t.Fatalf("%d in the filter, %d outside: the case tests too little", len(truth), len(all)-len(truth))
			}
			e := newTestClient(t, url, nil)
			byID := map[int]ecgridsim.DirUser{}
			for _, u := range all {
				byID[u.UserID] = u
			}
			dropped := map[int]string{}
			var last int
			users, err := e.c.ListUsers(context.Background(), c.filter, ListOptions{
				OnPage: func(_, _, total int) { last = total },
				OnDrop: func(u User, field string) {
					if _, twice := dropped[u.UserID]; twice {
						t.Errorf("user %d dropped twice", u.UserID)
					}
					dropped[u.UserID] = field
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			sameUsers(t, users, truth)
			if last != len(truth) {
				t.Errorf("OnPage saw %d users at the end, want %d", last, len(truth))
			}
			if len(dropped) != len(all)-len(truth) {
				t.Fatalf("%d dropped, want %d", len(dropped), len(all)-len(truth))
			}
			for id, field := range dropped {
				u := byID[id]
				var bad bool
				switch field {
				case "networkId":
					bad = u.NetworkID == c.filter.NetworkID
				case "mailboxId":
					bad = u.MailboxID == c.filter.MailboxID
				case "authLevel":
					bad = u.AuthLevel == c.filter.AuthLevel
				case "status":
					bad = u.Status == c.filter.Status
				default:
					bad = true
				}
				if bad {
					t.Fatalf("user %d dropped for %q: %+v", id, field, u)
				}
			}
			logs := e.logs.String()
			if n := strings.Count(logs, "outside the filter"); n != 1 ||
				!strings.Contains(logs, "level=WARN msg=\"the server listed users outside the filter: dropped them\" dropped="+strconv.Itoa(len(dropped))+" ") {
				t.Fatalf("%d warnings; log:\n%s", n, logs)
			}
		})
	}
}

// TestListUsersRefusesUncheckableUsers: while the filter selects on a
// field, a listed user lacking it stops the listing with an error naming
// the field; a field the filter does not select on may be missing.
func TestListUsersRefusesUncheckableUsers(t *testing.T) {
	f := UserFilter{NetworkID: 1, MailboxID: 101, AuthLevel: "Root", Status: "Active"}
	ok := `"networkId":1,"mailboxId":101,"authLevel":"Root","status":"Active"`
	for _, c := range []struct {
		name, user string
		filter     UserFilter
		want       string // "" for kept
	}{
		{"no networkId", `"mailboxId":101,"authLevel":"Root","status":"Active"`, f, "user 9 has no networkId, while the filter selects networkId 1"},
		{"null networkId", `"networkId":null,"mailboxId":101,"authLevel":"Root","status":"Active"`, f, "has no networkId"},
		{"networkId 0", `"networkId":0,"mailboxId":101,"authLevel":"Root","status":"Active"`, f, "has no networkId"},
		{"no mailboxId", `"networkId":1,"mailboxId":"","authLevel":"Root","status":"Active"`, f, "user 9 has no mailboxId, while the filter selects mailboxId 101"},
		{"null authLevel", `"networkId":1,"mailboxId":101,"authLevel":null,"status":"Active"`, f, "user 9 has no authLevel, while the filter selects authLevel Root"},
		{"no status", `"networkId":1,"mailboxId":101,"authLevel":"Root"`, f, "user 9 has no status, while the filter selects status Active"},
		{"blank status", `"networkId":1,"mailboxId":101,"authLevel":"Root","status":" "`, f, "has no status"},
		{"status any: none needed", `"networkId":1`, UserFilter{NetworkID: 1}, ""},
		{"names in other cases", `"networkId":"1","mailboxId":101,"authLevel":"root","status":"ACTIVE"`, f, ""},
		{"all there", ok, f, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := newFakeAPI(t, reply(200, `{"success":true,"data":[{"userId":8,`+ok+`},{"userId":9,`+c.user+`}]}`),
				reply(200, `{"success":true,"data":[]}`))
			e := newTestClient(t, api.srv.URL, nil)
			users, err := e.c.ListUsers(context.Background(), c.filter, ListOptions{
				OnDrop: func(u User, field string) { t.Errorf("user %d dropped for %s", u.UserID, field) },
			})
			if c.want == "" {
				if err != nil || len(users) != 2 {
					t.Fatalf("%d users, %v", len(users), err)
				}
				return
			}
			if !errors.Is(err, ErrFilterUnchecked) || !strings.HasPrefix(err.Error(), "page 1: user 9 has no ") || !strings.Contains(err.Error(), c.want) || users != nil {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			checkMessage(t, err.Error())
		})
	}
}

func TestUserFilterOutside(t *testing.T) {
	u := User{UserID: 5, NetworkID: 1, MailboxID: 101, AuthLevel: "NetworkAdmin", Status: "Active"}
	for _, c := range []struct {
		name string
		f    UserFilter
		want string
	}{
		{"empty filter", UserFilter{}, ""},
		{"same", UserFilter{NetworkID: 1, MailboxID: 101, AuthLevel: "NetworkAdmin", Status: "Active"}, ""},
		{"other network", UserFilter{NetworkID: 2, Status: "Active"}, "networkId"},
		{"other mailbox", UserFilter{NetworkID: 1, MailboxID: 102}, "mailboxId"},
		{"other level", UserFilter{AuthLevel: "Root"}, "authLevel"},
		{"other status", UserFilter{NetworkID: 1, Status: "Terminated"}, "status"},
		{"network first", UserFilter{NetworkID: 3, Status: "Suspended"}, "networkId"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, err := c.f.Outside(u); err != nil || got != c.want {
				t.Fatalf("Outside = %q, %v; want %q", got, err, c.want)
			}
		})
	}
	odd := u
	odd.AuthLevel = "Overlord"
	if got, err := (UserFilter{AuthLevel: "NetworkAdmin"}).Outside(odd); err != nil || got != "authLevel" {
		t.Fatalf("an unknown level: %q, %v", got, err)
	}
}
