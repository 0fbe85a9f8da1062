// Package demo runs pwrotate against its built-in ECGrid simulator on
// loopback: the example input, a throw-away API key and a fresh age identity,
// so that a newcomer can watch a whole rotation without any credential.
package demo

import (
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"pwrotate/rotate/ecgridsim"
)

// ExampleInput is the bundled users CSV that --demo rotates (40 users; two
// rows carry clearly-fake demo passwords to show the newPassword column).
//
//go:embed example-users.csv
var ExampleInput []byte

// InputName is the name the example input goes by in plans and summaries.
const InputName = "demo:example-users.csv"

// CallerID is the simulator user that owns the demo API key.
const CallerID = 1

// Env is a running demo simulator.
type Env struct {
	BaseURL string
	APIKey  string
	Sim     *ecgridsim.Server
	srv     *http.Server
}

// DirectorySize and DirectorySeed make the demo's user directory
// (ecgridsim.GenerateDirectory), which `run --demo --select network=1`
// lists.
const (
	DirectorySize = 120
	DirectorySeed = 2026
)

// Start serves a simulator on 127.0.0.1 with a fresh random API key
// (NetworkAdmin), every user ID existing, a user directory of three
// networks, a little latency, and a few transient faults that the job's
// retries (and, for API keys, read-backs) must absorb: on the password
// endpoint, on key-generate, and on the listing (pages capped at 25 users
// whatever is asked, one 503).
func Start() (*Env, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	key := hex.EncodeToString(b[:])
	sim := ecgridsim.New()
	sim.SetAutoCreate(true)
	sim.AddKey(key, CallerID, "NetworkAdmin")
	sim.SetLatency(5*time.Millisecond, 30*time.Millisecond)
	sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: 1003, Kind: ecgridsim.TooManyRequests, RetryAfter: "1"})
	sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: 1011, Kind: ecgridsim.HTMLError})
	sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: 1019, Kind: ecgridsim.ApplyThenDrop})
	sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: 1031, Kind: ecgridsim.Problem, Status: 502})
	// With --rotate-api-keys: two key-generate answers lost after the key
	// was replaced: both settled by reading the key back, no second key.
	sim.Inject(ecgridsim.Fault{Endpoint: "keygen", UserID: 1007, Kind: ecgridsim.ApplyThenDrop})
	sim.Inject(ecgridsim.Fault{Endpoint: "keygen", UserID: 1023, Kind: ecgridsim.ApplyThenDrop})
	dir := ecgridsim.GenerateDirectory(DirectorySize, DirectorySeed)
	for _, u := range dir {
		sim.AddDirectoryUser(u)
	}
	// The caller itself is in network 2, so that network 1 is all others.
	sim.AddDirectoryUser(ecgridsim.DirUser{UserID: CallerID, Login: "api-user-1", Email: "api-user-1@example.com",
		FirstName: "Demo", LastName: "Administrator", NetworkID: 2, MailboxID: 201, AuthLevel: "NetworkAdmin", Status: "Active"})
	sim.SetListBehavior(ecgridsim.ListBehavior{PageCap: 25})
	sim.Inject(ecgridsim.Fault{Endpoint: "list", Kind: ecgridsim.HTMLError})
	faulted := 0
	for _, u := range sim.Directory(ecgridsim.ListFilter{NetworkID: 1, Status: "Active"}) {
		if u.UserID%5 == 0 && faulted < 2 {
			kind := []ecgridsim.FaultKind{ecgridsim.TooManyRequests, ecgridsim.ApplyThenDrop}[faulted]
			sim.Inject(ecgridsim.Fault{Endpoint: "password", UserID: u.UserID, Kind: kind, RetryAfter: "1"})
			faulted++
		}
	}
	base, srv, err := sim.ListenLoopback()
	if err != nil {
		return nil, fmt.Errorf("demo simulator: %w", err)
	}
	return &Env{BaseURL: base, APIKey: key, Sim: sim, srv: srv}, nil
}

// Close stops the simulator.
func (e *Env) Close() error { return e.srv.Close() }
