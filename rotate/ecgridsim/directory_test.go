package ecgridsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// listPage posts a list request and returns the users of its data, which
// must be an array or an object holding "users".
func listPage(t *testing.T, base, key, body string) (result, []DirUser) {
	t.Helper()
	r := do(context.Background(), freshClient(), http.MethodPost, base+pathList, key, "application/json", body)
	if r.err != nil || r.status != http.StatusOK {
		return r, nil
	}
	e := r.env(t)
	var users []DirUser
	if err := json.Unmarshal(e.Data, &users); err != nil {
		var obj struct {
			Users []DirUser `json:"users"`
		}
		if err := json.Unmarshal(e.Data, &obj); err != nil {
			t.Fatalf("data is neither an array nor an object of users: %s", e.Data)
		}
		users = obj.Users
	}
	return r, users
}

func ids(users []DirUser) []int {
	out := make([]int, len(users))
	for i, u := range users {
		out[i] = u.UserID
	}
	return out
}

// listAll pages through the listing with pageNo from 1 until an empty page.
func listAll(t *testing.T, base, filter string, size int) []DirUser {
	t.Helper()
	var all []DirUser
	for page := 1; page < 1000; page++ {
		body := fmt.Sprintf(`{%s"pageNo":%d,"recordsPerPage":%d}`, filter, page, size)
		r, users := listPage(t, base, adminKey, body)
		if r.status != http.StatusOK {
			t.Fatalf("page %d: status %d %s", page, r.status, r.body)
		}
		if len(users) == 0 {
			return all
		}
		all = append(all, users...)
	}
	t.Fatal("no empty page")
	return nil
}

func TestGenerateDirectory(t *testing.T) {
	a, b := GenerateDirectory(300, 7), GenerateDirectory(300, 7)
	if !slices.Equal(ids(a), ids(b)) {
		t.Fatal("not deterministic")
	}
	if slices.IsSorted(ids(a)) {
		t.Fatal("listing order is userId order: an export would not need to sort")
	}
	seen := map[int]bool{}
	var svc, formula int
	levels, statuses, networks := map[string]bool{}, map[string]bool{}, map[int]bool{}
	for _, u := range a {
		if seen[u.UserID] {
			t.Fatalf("user %d twice", u.UserID)
		}
		seen[u.UserID] = true
		if strings.HasPrefix(u.Login, "svc-") {
			svc++
		}
		if strings.HasPrefix(u.Login, "=") {
			formula++
		}
		levels[u.AuthLevel], statuses[u.Status], networks[u.NetworkID] = true, true, true
	}
	if svc < 5 || formula != 1 || len(levels) != 9 || len(statuses) != 5 || len(networks) != 3 {
		t.Fatalf("svc %d, formula %d, levels %d, statuses %d, networks %d", svc, formula, len(levels), len(statuses), len(networks))
	}
}

func TestListPaging(t *testing.T) {
	s, ts := newSim(t)
	for _, u := range GenerateDirectory(200, 1) {
		s.AddDirectoryUser(u)
	}
	truth := s.Directory(ListFilter{NetworkID: 1, Status: "Active"})
	if len(truth) < 30 {
		t.Fatalf("only %d users in the filter", len(truth))
	}
	filter := `"networkId":1,"status":"active",`
	cases := []struct {
		name string
		b    ListBehavior
		size int
	}{
		{"array", ListBehavior{}, 7},
		{"object", ListBehavior{Shape: ListObject}, 100},
		{"cap below the asked size", ListBehavior{PageCap: 9}, 100},
		{"asked above the maximum", ListBehavior{}, 5000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.SetListBehavior(c.b)
			got := listAll(t, ts.URL, filter, c.size)
			slices.SortFunc(got, func(a, b DirUser) int { return a.UserID - b.UserID })
			if !slices.Equal(ids(got), ids(truth)) {
				t.Fatalf("listed %d users, the truth has %d", len(got), len(truth))
			}
		})
	}

	t.Run("page cap", func(t *testing.T) {
		s.SetListBehavior(ListBehavior{PageCap: 9})
		_, users := listPage(t, ts.URL, adminKey, `{"recordsPerPage":100}`)
		if len(users) != 9 {
			t.Fatalf("%d users on a page capped at 9", len(users))
		}
	})
	t.Run("ignored pageNo", func(t *testing.T) {
		s.SetListBehavior(ListBehavior{IgnorePageNo: true})
		_, p1 := listPage(t, ts.URL, adminKey, `{"pageNo":1,"recordsPerPage":10}`)
		_, p2 := listPage(t, ts.URL, adminKey, `{"pageNo":2,"recordsPerPage":10}`)
		if len(p1) != 10 || !slices.Equal(ids(p1), ids(p2)) {
			t.Fatalf("page 2 %v, page 1 %v", ids(p2), ids(p1))
		}
	})
	t.Run("default page size", func(t *testing.T) {
		s.SetListBehavior(ListBehavior{})
		_, users := listPage(t, ts.URL, adminKey, ``)
		if len(users) != DefaultListPage {
			t.Fatalf("%d users", len(users))
		}
	})
	for _, c := range []struct {
		shape ListShape
		want  string
	}{{ListTwoArrays, `"links":[]`}, {ListString, `"data":"users"`}} {
		t.Run(fmt.Sprintf("shape %d", c.shape), func(t *testing.T) {
			s.SetListBehavior(ListBehavior{Shape: c.shape})
			r := do(context.Background(), freshClient(), http.MethodPost, ts.URL+pathList, adminKey, "application/json", `{}`)
			if r.status != http.StatusOK || !strings.Contains(string(r.body), c.want) {
				t.Fatalf("%d %s", r.status, r.body)
			}
		})
	}
	if n := s.Count("list"); n == 0 {
		t.Fatal("list calls not counted")
	}
}

func TestListRefusals(t *testing.T) {
	s, ts := newSim(t)
	s.AddDirectoryUser(DirUser{UserID: 1042, Login: "x", NetworkID: 1, Status: "Active"})
	cases := []struct {
		name, key, ctype, body string
		status                 int
		code                   string
	}{
		{"no key", "", "application/json", `{}`, 401, "InvalidAPIKey"},
		{"low level", lowKey, "application/json", `{}`, 403, "AccessDenied"},
		{"bad status", adminKey, "application/json", `{"status":"Sleeping"}`, 400, "InvalidParameter"},
		{"bad level", adminKey, "application/json", `{"authLevel":"Overlord"}`, 400, "InvalidParameter"},
		{"negative page", adminKey, "application/json", `{"pageNo":-1}`, 400, "InvalidParameter"},
		{"not json", adminKey, "application/json", `{`, 400, "InvalidParameter"},
		{"content type", adminKey, "text/plain", `{}`, 415, "InvalidParameter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(context.Background(), freshClient(), http.MethodPost, ts.URL+pathList, c.key, c.ctype, c.body)
			wantEnvelope(t, r, c.status, c.code)
		})
	}
	r := do(context.Background(), freshClient(), http.MethodGet, ts.URL+pathList, adminKey, "", "")
	if r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", r.status)
	}
}

func TestListFaults(t *testing.T) {
	s, ts := newSim(t)
	s.AddDirectoryUser(DirUser{UserID: 1042, Login: "x", NetworkID: 1, Status: "Active"})
	s.Inject(Fault{Endpoint: "list", Kind: HTMLError})
	s.Inject(Fault{Endpoint: "list", Kind: TooManyRequests, RetryAfter: "2"})
	r, _ := listPage(t, ts.URL, adminKey, `{}`)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("first: %d", r.status)
	}
	r, _ = listPage(t, ts.URL, adminKey, `{}`)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "2" {
		t.Fatalf("second: %d", r.status)
	}
	r, users := listPage(t, ts.URL, adminKey, `{}`)
	if r.status != http.StatusOK || len(users) != 1 {
		t.Fatalf("third: %d %s", r.status, r.body)
	}
	for _, c := range s.Calls() {
		if c.Endpoint != "list" {
			t.Fatalf("call recorded as %q", c.Endpoint)
		}
	}
	// A directory user exists for the password endpoint.
	if _, ok := s.Password(1042); !ok {
		t.Fatal("directory user cannot have a password")
	}
}
