package rotate

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
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
	api := newFakeAPI(t, reply(200, `{"success":true,"data":[{"userId":5}]}`), reply(200, `{"success":true,"data":[]}`))
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
