package domxml

import (
	"strings"
	"testing"
)

// evacuationXML is a domain whose lvhook element carries attrs.
func evacuationXML(attrs string) []byte {
	return []byte(`<domain><name>t1</name><uuid>11111111-2222-3333-4444-555555555555</uuid><metadata>` +
		`<lvhook:domain xmlns:lvhook="` + MetadataNS + `" ` + attrs + `/></metadata>` +
		`<devices><disk type='block'><source dev='/dev/vg0/t1'/><target dev='vda'/></disk></devices></domain>`)
}

func TestEvacuation(t *testing.T) {
	tests := []struct {
		name, attrs string
		want        Evacuation
		err         string
	}{
		{"none", `manage="yes"`, Evacuation{}, ""},
		{"both", `priority="10" fallback="managedsave"`, Evacuation{Priority: 10, Fallback: "managedsave"}, ""},
		{"lowest", `priority="-1000" fallback="leave"`, Evacuation{Priority: -1000, Fallback: "leave"}, ""},
		{"highest, spaces and case", `priority=" 1000 " fallback="Shutdown"`, Evacuation{Priority: 1000, Fallback: "shutdown"}, ""},
		{"priority too high", `priority="1001"`, Evacuation{},
			`domain t1: lvhook metadata: priority="1001" is not an integer from -1000 to 1000`},
		{"priority not a number", `priority="high" fallback="leave"`, Evacuation{Fallback: "leave"},
			`domain t1: lvhook metadata: priority="high" is not an integer from -1000 to 1000`},
		{"empty priority", `priority=""`, Evacuation{}, `priority="" is not an integer`},
		{"unknown fallback", `priority="5" fallback="reboot"`, Evacuation{Priority: 5},
			`domain t1: lvhook metadata: fallback="reboot" is not managedsave, shutdown or leave`},
		{"both bad", `priority="1.5" fallback="destroy"`, Evacuation{},
			`domain t1: lvhook metadata: priority="1.5" is not an integer from -1000 to 1000; fallback="destroy" is not managedsave, shutdown or leave`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse(evacuationXML(tt.attrs), poolDir)
			if err != nil {
				t.Fatalf("Parse: %v (bad evacuation attributes must not fail the parse: the hook reads it)", err)
			}
			got, err := d.Evacuation()
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("Evacuation() error %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("Evacuation() error %v, want %q", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("Evacuation() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestEvacuationWithoutElement: a domain without lvhook's element has the
// defaults.
func TestEvacuationWithoutElement(t *testing.T) {
	d, err := Parse(readDomain(t, "block-three.xml"), poolDir)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := d.Evacuation(); err != nil || ev != (Evacuation{}) {
		t.Errorf("Evacuation() = %+v, %v; want the defaults", ev, err)
	}
}
