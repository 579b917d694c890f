package evacuate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/lvhook/lvhook/internal/testutil"
	"github.com/lvhook/lvhook/virt"
	"github.com/lvhook/lvhook/virt/virttest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/evacuate")

// slowMigrations is a libvirtd whose migrations take 31.2 s on the world's
// clock.
type slowMigrations struct {
	*virttest.Fake
	w *world
}

func (s slowMigrations) Migrate(ctx context.Context, uuid string, m virt.Migration) error {
	s.w.mu.Lock()
	s.w.now = s.w.now.Add(31200 * time.Millisecond)
	s.w.mu.Unlock()
	return s.Fake.Migrate(ctx, uuid, m)
}

// goldenWorld is host1 with five domains: one migrates, one fails to and
// is shut down, one finds no room anywhere and ignores its shutdown, one is
// arriving, one has a typo in its metadata; host3 has its own migrate_uri.
func goldenWorld(t *testing.T) *world {
	w := newWorld(t)
	w.capacity["host2"] = answer("host2", 16)
	w.capacity["host3"] = answer("host3", 12)
	w.e.Libvirt = slowMigrations{w.lv, w}
	w.run("db", 8, `priority="50" fallback="managedsave"`, 2)
	web := w.run("web", 2, `priority="10"`, 1)
	big := w.run("batch", 24, "", 1)
	in := w.run("arriving", 1, "", 1)
	w.run("typo", 1, `priority="urgent"`, 1)
	w.lv.Do(func() {
		web.MigrateErr = errors.New("operation failed: migration out job: unexpectedly failed")
		big.IgnoresShutdown = true
		in.Job.Kind, in.State = virt.JobMigrationIn, virt.StatePaused
	})
	return w
}

// TestReportGolden: the table and the JSON of an evacuation and of a dry
// run, from real runs of the world.
func TestReportGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{{"evacuation", Options{}}, {"dry-run", Options{DryRun: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			w := goldenWorld(t)
			rep := w.evacuate(tc.opts)
			var table, js bytes.Buffer
			if err := rep.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".txt", table.Bytes())
			golden(t, tc.name+".json", js.Bytes())
			golden(t, tc.name+"-progress.txt", []byte(w.out.String()))
			var back Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Version != 1 {
				t.Errorf("the JSON does not read back as version 1: %v", err)
			}
		})
	}
}

// golden compares got with testdata/evacuate/name, or rewrites it with
// -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testutil.Golden(t, filepath.Join("..", "testdata", "evacuate", name), got, *update)
}
