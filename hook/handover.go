package hook

import "errors"

// ErrHandoverRefused is what a Hook.Handover returns (wrapped) when no peer
// said yes within its bound. The prepare is then refused without trying
// -asy: lvmlockd grants sh to any number of hosts, so an -asy without the
// source's yes could join LVs that some host still holds shared from an
// earlier migration (three sharers), and a source that did not answer keeps,
// or takes back, its ex lock once its migration job ends.
var ErrHandoverRefused = errors.New("no peer agreed to downgrade")
