package rotate

import "strings"

// AuthLevel is an ECGrid authorization level. Levels compare with < and >:
// LevelUnknown < LevelGeneral < ... < LevelRoot.
type AuthLevel int

// The ECGrid authorization levels, lowest first.
const (
	LevelUnknown      AuthLevel = iota // a name the client does not know: treated as too low
	LevelGeneral                       // General
	LevelTPUser                        // TPUser
	LevelMailboxUser                   // MailboxUser
	LevelMailboxAdmin                  // MailboxAdmin
	LevelNetworkUser                   // NetworkUser
	LevelNetworkAdmin                  // NetworkAdmin: the lowest level that may change passwords
	LevelNetOps                        // NetOps
	LevelTechOps                       // TechOps
	LevelRoot                          // Root
)

var levelNames = [...]string{
	LevelUnknown:      "Unknown",
	LevelGeneral:      "General",
	LevelTPUser:       "TPUser",
	LevelMailboxUser:  "MailboxUser",
	LevelMailboxAdmin: "MailboxAdmin",
	LevelNetworkUser:  "NetworkUser",
	LevelNetworkAdmin: "NetworkAdmin",
	LevelNetOps:       "NetOps",
	LevelTechOps:      "TechOps",
	LevelRoot:         "Root",
}

// ParseAuthLevel returns the level named s, ignoring case and surrounding
// spaces. A name it does not know gives LevelUnknown, which is lower than
// every real level.
func ParseAuthLevel(s string) AuthLevel {
	s = strings.TrimSpace(s)
	for l := LevelGeneral; l <= LevelRoot; l++ {
		if strings.EqualFold(s, levelNames[l]) {
			return l
		}
	}
	return LevelUnknown
}

// String returns the level's ECGrid name, or "Unknown".
func (l AuthLevel) String() string {
	if l < LevelUnknown || l > LevelRoot {
		return levelNames[LevelUnknown]
	}
	return levelNames[l]
}

// Caller is the account that owns the API key, from GET /v2/users/me.
type Caller struct {
	UserID    int       // data.userId
	Level     AuthLevel // data.authLevel, parsed
	LevelName string    // data.authLevel as sent (sanitized), to report unknown names
}
