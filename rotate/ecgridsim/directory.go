package ecgridsim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Paging of POST /v2/users/list.
const (
	// DefaultListPage is the page size when the request names none.
	DefaultListPage = 25
	// MaxListPage is the largest page the simulator ever answers, whatever
	// was asked.
	MaxListPage = 1000
)

// Statuses are the ECGrid user statuses.
var Statuses = []string{"Development", "Active", "Preproduction", "Suspended", "Terminated"}

// DirUser is one user of the simulator's directory, as POST /v2/users/list
// answers it (ECGrid's UserIDInfo).
type DirUser struct {
	UserID    int       `json:"userId"`
	Login     string    `json:"login"`
	Email     string    `json:"email"`
	FirstName string    `json:"firstName"`
	LastName  string    `json:"lastName"`
	NetworkID int       `json:"networkId"`
	MailboxID int       `json:"mailboxId"`
	AuthLevel string    `json:"authLevel"`
	Status    string    `json:"status"`
	Created   time.Time `json:"created"`
}

// ListFilter selects directory users as the body of POST /v2/users/list
// does: a zero field matches every user; names match case-insensitively.
type ListFilter struct {
	NetworkID int
	MailboxID int
	AuthLevel string
	Status    string
}

func (f ListFilter) matches(u *DirUser) bool {
	return (f.NetworkID == 0 || f.NetworkID == u.NetworkID) &&
		(f.MailboxID == 0 || f.MailboxID == u.MailboxID) &&
		(f.AuthLevel == "" || strings.EqualFold(f.AuthLevel, u.AuthLevel)) &&
		(f.Status == "" || strings.EqualFold(f.Status, u.Status))
}

// ListShape is how the simulator lays out the "data" of a users page.
type ListShape int

const (
	// ListArray answers "data": [users...].
	ListArray ListShape = iota
	// ListObject answers "data": {"users": [...], "totalRecords": N}, an
	// object holding one array (the other layout the ECGrid docs show).
	ListObject
	// ListTwoArrays answers "data": {"users": [...], "links": []}: an object
	// holding two arrays, which a client cannot read safely.
	ListTwoArrays
	// ListString answers "data": "users", neither layout.
	ListString
)

// ListBehavior is how POST /v2/users/list misbehaves, besides the faults
// that Inject queues for the "list" endpoint (429, 503, ...).
type ListBehavior struct {
	// PageCap answers at most this many users a page, silently, whatever
	// recordsPerPage asked for (0: MaxListPage). Offsets follow the capped
	// size, unless OffsetByAsked.
	PageCap int
	// OffsetByAsked computes a page's offset from the recordsPerPage asked
	// for, not from the capped size: with a PageCap, a client that keeps
	// asking for more than the cap misses the users between pages.
	OffsetByAsked bool
	// IgnorePageNo answers the first page whatever pageNo says.
	IgnorePageNo bool
	// IgnoreFilter lists every user whatever networkId, mailboxId,
	// authLevel and status ask for, as a server that drops the filter
	// members it does not know (pageNo and recordsPerPage still apply).
	IgnoreFilter bool
	// Shape lays out "data".
	Shape ListShape
}

// AddDirectoryUser adds u to the directory (or replaces the entry with its
// userId, keeping its place in the listing order). The user exists for the
// password and reset endpoints too; a new one has the password "" until
// AddUser or a change sets one. The listing order is the order users were
// added in, not userId order.
func (s *Server) AddDirectoryUser(u DirUser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirIndex == nil {
		s.dirIndex = make(map[int]int)
	}
	if i, ok := s.dirIndex[u.UserID]; ok {
		s.dir[i] = u
	} else {
		s.dirIndex[u.UserID] = len(s.dir)
		s.dir = append(s.dir, u)
	}
	if _, ok := s.users[u.UserID]; !ok {
		s.users[u.UserID] = user{}
	}
}

// Directory returns the directory users that f selects, sorted by userId:
// the truth an export of the same filter must equal.
func (s *Server) Directory(f ListFilter) []DirUser {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []DirUser
	for i := range s.dir {
		if f.matches(&s.dir[i]) {
			out = append(out, s.dir[i])
		}
	}
	slices.SortFunc(out, func(a, b DirUser) int { return a.UserID - b.UserID })
	return out
}

// SetListBehavior sets how POST /v2/users/list pages its answers.
func (s *Server) SetListBehavior(b ListBehavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listBehavior = b
}

// listQuery is the parsed body of POST /v2/users/list.
type listQuery struct {
	filter         ListFilter
	pageNo         int
	recordsPerPage int
}

var respBadList = errResponse(http.StatusBadRequest, "InvalidParameter", "networkId, mailboxId, pageNo and recordsPerPage must be non-negative integers; authLevel and status known names.")

// parseListBody reads the body of POST /v2/users/list. An empty body asks
// for the first page of everyone.
func parseListBody(r *http.Request, req *request) {
	b, bad := readJSONBody(r)
	if bad != nil {
		req.bad = bad
		return
	}
	q := &listQuery{pageNo: 1, recordsPerPage: DefaultListPage}
	req.list = q
	if len(strings.TrimSpace(string(b))) == 0 {
		return
	}
	var body struct {
		NetworkID      *int64  `json:"networkId"`
		MailboxID      *int64  `json:"mailboxId"`
		AuthLevel      *string `json:"authLevel"`
		Status         *string `json:"status"`
		PageNo         *int64  `json:"pageNo"`
		RecordsPerPage *int64  `json:"recordsPerPage"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		req.bad = &respBadJSON
		return
	}
	nonNeg := func(p *int64, dst *int) bool {
		if p == nil {
			return true
		}
		if *p < 0 || *p > MaxUserID {
			return false
		}
		if *p > 0 {
			*dst = int(*p)
		}
		return true
	}
	if !nonNeg(body.NetworkID, &q.filter.NetworkID) || !nonNeg(body.MailboxID, &q.filter.MailboxID) ||
		!nonNeg(body.PageNo, &q.pageNo) || !nonNeg(body.RecordsPerPage, &q.recordsPerPage) {
		req.bad = &respBadList
		return
	}
	if body.AuthLevel != nil && *body.AuthLevel != "" {
		if !knownName(*body.AuthLevel, authLevelNames()) {
			req.bad = &respBadList
			return
		}
		q.filter.AuthLevel = *body.AuthLevel
	}
	if body.Status != nil && *body.Status != "" {
		if !knownName(*body.Status, Statuses) {
			req.bad = &respBadList
			return
		}
		q.filter.Status = *body.Status
	}
}

func knownName(s string, names []string) bool {
	for _, n := range names {
		if strings.EqualFold(s, n) {
			return true
		}
	}
	return false
}

func authLevelNames() []string {
	names := make([]string, 0, len(authLevels))
	for n := range authLevels {
		names = append(names, n)
	}
	return names
}

// listPageLocked answers one page of the directory. Call with s.mu held.
func (s *Server) listPageLocked(q *listQuery) response {
	b := s.listBehavior
	size := min(q.recordsPerPage, MaxListPage)
	if b.PageCap > 0 {
		size = min(size, b.PageCap)
	}
	page := q.pageNo
	if b.IgnorePageNo {
		page = 1
	}
	filter := q.filter
	if b.IgnoreFilter {
		filter = ListFilter{}
	}
	users := []DirUser{}
	skip := (page - 1) * size
	if b.OffsetByAsked {
		skip = (page - 1) * q.recordsPerPage
	}
	for i := range s.dir {
		if len(users) == size {
			break
		}
		if !filter.matches(&s.dir[i]) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		users = append(users, s.dir[i])
	}
	var data any = users
	switch b.Shape {
	case ListObject:
		data = struct {
			Users        []DirUser `json:"users"`
			TotalRecords int       `json:"totalRecords"`
		}{users, len(users)}
	case ListTwoArrays:
		data = struct {
			Users []DirUser `json:"users"`
			Links []string  `json:"links"`
		}{users, []string{}}
	case ListString:
		data = "users"
	}
	body, err := json.Marshal(struct {
		Success bool `json:"success"`
		Data    any  `json:"data"`
	}{true, data})
	if err != nil {
		return errResponse(http.StatusInternalServerError, defaultCode, "Encoding failed.")
	}
	return response{status: http.StatusOK, ctype: ctJSON, body: body}
}

// GenerateDirectory returns n users (n >= 8) for a simulator directory,
// the same for the same seed, in a shuffled order with distinct IDs from
// 1000 up: networks 1 to 3, a few mailboxes each, every AuthLevel (few
// Root and TechOps), every status (most Active), logins such as
// "ana.silva" and, about one in eight, service accounts "svc-ftp-…" or
// "svc-soap-…". The first users are hostile on purpose, all Active in
// network 1: a login that looks like a spreadsheet formula ("=cmd|' /C
// calc'!A0"), names with a comma, quotes, a line break and a bidi control,
// and an email starting with "@" or "+".
func GenerateDirectory(n int, seed uint64) []DirUser {
	n = max(n, 8)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	firsts := []string{"Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jo", "Kai", "Lea", "Zoë", "Ngozi", "Óscar"}
	lasts := []string{"Silva", "Meyer", "Wong", "Okafor", "Novak", "Haddad", "Berg", "Tanaka", "Rossi", "Dubois", "Kowalski", "O'Brien"}
	levels := []string{"Root", "TechOps", "NetOps", "NetworkAdmin", "NetworkUser", "MailboxAdmin", "MailboxUser", "TPUser", "General"}
	levelWeights := []int{1, 1, 2, 6, 14, 10, 30, 16, 20}
	statusWeights := []int{4, 80, 4, 7, 5}
	pick := func(weights []int) int {
		total := 0
		for _, w := range weights {
			total += w
		}
		x := rng.IntN(total)
		for i, w := range weights {
			if x < w {
				return i
			}
			x -= w
		}
		return len(weights) - 1
	}
	ids := rng.Perm(n * 4)
	base := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	users := make([]DirUser, n)
	for i := range users {
		net := 1 + pick([]int{5, 3, 2})
		f, l := firsts[rng.IntN(len(firsts))], lasts[rng.IntN(len(lasts))]
		u := DirUser{
			UserID:    1000 + ids[i],
			FirstName: f,
			LastName:  l,
			NetworkID: net,
			MailboxID: net*100 + 1 + rng.IntN(4),
			AuthLevel: levels[pick(levelWeights)],
			Status:    Statuses[pick(statusWeights)],
			Created:   base.Add(time.Duration(rng.IntN(2000*24)) * time.Hour),
		}
		u.Login = strings.ToLower(asciiFold(f) + "." + asciiFold(l) + fmt.Sprint(i))
		if rng.IntN(8) == 0 {
			kind := []string{"ftp", "soap", "sftp"}[rng.IntN(3)]
			u.Login = fmt.Sprintf("svc-%s-%d", kind, i)
			u.FirstName, u.LastName = "Integration", strings.ToUpper(kind)
			u.AuthLevel = "MailboxUser"
		}
		u.Email = u.Login + "@example.com"
		users[i] = u
	}
	hostile := []func(u *DirUser){
		func(u *DirUser) { u.Login = "=cmd|' /C calc'!A0"; u.Email = "formula@example.com" },
		func(u *DirUser) { u.LastName = "Smith, Jr."; u.FirstName = `John "JJ"` },
		func(u *DirUser) { u.FirstName = "Line\nBreak"; u.LastName = "Bidi\u202eevil" },
		func(u *DirUser) { u.Email = "@sum(1+1)@example.com"; u.Login = "+plus" },
		func(u *DirUser) {
			u.Login = "svc-ftp-edi"
			u.FirstName = "EDI"
			u.LastName = "FTP"
			u.AuthLevel = "MailboxUser"
		},
		func(u *DirUser) { u.AuthLevel = "Root" },
	}
	for i, h := range hostile {
		u := &users[i]
		u.NetworkID, u.MailboxID, u.Status = 1, 101, "Active"
		h(u)
	}
	return users
}

// asciiFold drops the accents of the few names GenerateDirectory uses.
func asciiFold(s string) string {
	return strings.NewReplacer("ë", "e", "Ó", "O", "'", "").Replace(s)
}
