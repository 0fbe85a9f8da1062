package ecgridsim

import (
	"net/http"
	"strconv"
	"time"
)

// FaultKind says how an injected fault answers a request.
type FaultKind int

// The fault kinds. NoFault is what Call.Fault holds for a request that met
// no injected fault. Unless a kind says otherwise, the change is NOT applied.
const (
	// NoFault marks a request that was served normally.
	NoFault FaultKind = iota
	// TooManyRequests answers 429 with the envelope RateLimitExceeded and a
	// Retry-After header (Fault.RetryAfter, default "1").
	TooManyRequests
	// ServerError answers 500 with the envelope InternalError.
	ServerError
	// HTMLError answers 503 with a text/html proxy error page.
	HTMLError
	// Problem answers Fault.Status (default 500) with RFC 7807 problem JSON:
	// type, title, status, detail, traceId.
	Problem
	// SuccessFalse answers 200 with {"success":false,"errorCode":Code,...}.
	SuccessFalse
	// Envelope answers Fault.Status (default 500) with the ECGrid error
	// envelope carrying Fault.Code (default "InternalError").
	Envelope
	// ApplyThenDrop applies the request through the normal path, then closes
	// the connection without an answer.
	ApplyThenDrop
	// ApplyThenHold applies the request through the normal path, then holds
	// the normal answer for Fault.Hold (default 10 s) or until the client
	// gives up.
	ApplyThenHold
	// DropBeforeApply closes the connection without an answer.
	DropBeforeApply
	// Empty answers Fault.Status (default 502) with an empty body.
	Empty
	// InvalidJSON answers 200, Content-Type application/json, with a body
	// that is not JSON.
	InvalidJSON
	// DataFalse answers 200 {"success":true,"data":false}.
	DataFalse
	// HugeBody answers 200 with a 20 MiB HTML body.
	HugeBody
	// SlowDrip sends 200 headers, then a valid-looking JSON body one byte
	// every 100 ms for Fault.Hold (default 2 s), then cuts the connection:
	// the body never completes.
	SlowDrip
	// Redirect answers 307 to Fault.Location (default "/v2/moved").
	Redirect
	// Refusal answers 200 {"success":false,"data":false} with no errorCode
	// and no message: an unexplained refusal.
	Refusal
)

var faultNames = [...]string{
	NoFault:         "NoFault",
	TooManyRequests: "TooManyRequests",
	ServerError:     "ServerError",
	HTMLError:       "HTMLError",
	Problem:         "Problem",
	SuccessFalse:    "SuccessFalse",
	Envelope:        "Envelope",
	ApplyThenDrop:   "ApplyThenDrop",
	ApplyThenHold:   "ApplyThenHold",
	DropBeforeApply: "DropBeforeApply",
	Empty:           "Empty",
	InvalidJSON:     "InvalidJSON",
	DataFalse:       "DataFalse",
	HugeBody:        "HugeBody",
	SlowDrip:        "SlowDrip",
	Redirect:        "Redirect",
	Refusal:         "Refusal",
}

// String returns the kind's Go name, e.g. "ApplyThenDrop".
func (k FaultKind) String() string {
	if k >= 0 && int(k) < len(faultNames) {
		return faultNames[k]
	}
	return "FaultKind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is a scripted misbehaviour. Inject queues it; each request checks
// the queue in order and meets the first fault that matches it.
type Fault struct {
	// Endpoint is "me", "password", "reset", "list", or "" for any request.
	Endpoint string
	// UserID restricts the fault to requests about that user; 0 matches any.
	UserID int
	// Times is how many matching requests the fault hits; 0 means 1.
	Times int
	// Kind is what the fault does.
	Kind FaultKind
	// Status is the HTTP status for Problem, Envelope (default 500) and
	// Empty (default 502).
	Status int
	// Code is the errorCode for SuccessFalse and Envelope (default
	// "InternalError").
	Code string
	// RetryAfter is the Retry-After value for TooManyRequests: seconds or an
	// HTTP date; default "1".
	RetryAfter string
	// Hold is how long ApplyThenHold holds its answer (default 10 s) and
	// how long SlowDrip drips (default 2 s).
	Hold time.Duration
	// Location is where Redirect points (default "/v2/moved").
	Location string
}

// Defaults for the optional Fault fields.
const (
	defaultHold     = 10 * time.Second
	defaultDripHold = 2 * time.Second
	dripInterval    = 100 * time.Millisecond
	hugeBodySize    = 20 << 20
	defaultLocation = "/v2/moved"
	defaultCode     = "InternalError"
)

// matches reports whether the fault applies to a request.
func (f *Fault) matches(ep endpoint, userID int) bool {
	if f.Endpoint != "" && f.Endpoint != ep.String() {
		return false
	}
	return f.UserID == 0 || f.UserID == userID
}

func orStatus(s, def int) int {
	if s == 0 {
		return def
	}
	return s
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// fixedResponse returns the canned answer of a fault that neither applies
// the change nor plays with the connection.
func fixedResponse(f *Fault) response {
	switch f.Kind {
	case TooManyRequests:
		return response{
			status:     http.StatusTooManyRequests,
			ctype:      ctJSON,
			body:       envelope("RateLimitExceeded", "Rate limit exceeded; retry later."),
			retryAfter: orString(f.RetryAfter, "1"),
		}
	case ServerError:
		return response{status: http.StatusInternalServerError, ctype: ctJSON, body: envelope(defaultCode, "An internal error occurred.")}
	case HTMLError:
		return response{status: http.StatusServiceUnavailable, ctype: ctHTML, body: htmlErrorPage}
	case Problem:
		st := orStatus(f.Status, http.StatusInternalServerError)
		return response{status: st, ctype: ctProblem, body: problemBody(st)}
	case SuccessFalse:
		return response{status: http.StatusOK, ctype: ctJSON, body: envelope(orString(f.Code, defaultCode), "The request could not be completed.")}
	case Envelope:
		code := orString(f.Code, defaultCode)
		return response{status: orStatus(f.Status, http.StatusInternalServerError), ctype: ctJSON, body: envelope(code, "Request failed: "+code+".")}
	case Empty:
		return response{status: orStatus(f.Status, http.StatusBadGateway)}
	case InvalidJSON:
		return response{status: http.StatusOK, ctype: ctJSON, body: invalidJSONBody}
	case DataFalse:
		return response{status: http.StatusOK, ctype: ctJSON, body: dataFalseBody}
	case Refusal:
		return response{status: http.StatusOK, ctype: ctJSON, body: refusalBody}
	case Redirect:
		return response{status: http.StatusTemporaryRedirect, location: orString(f.Location, defaultLocation)}
	}
	return response{status: http.StatusInternalServerError, ctype: ctJSON, body: envelope(defaultCode, "Unknown simulator fault.")}
}

var (
	htmlErrorPage = []byte("<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n" +
		"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n" +
		"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
	invalidJSONBody = []byte(`{"success":true,"data":tr<!-- upstream truncated -->`)
	dataFalseBody   = []byte(`{"success":true,"data":false}`)
	refusalBody     = []byte(`{"success":false,"data":false}`)
	// dripBody is what SlowDrip sends: it looks like a success but is never
	// finished (the closing brace never comes; spaces pad a long Hold).
	dripBody = []byte(`{"success":true,"data":true`)
)
