package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"
)

// Hidden commands that generate the documentation shipped in the packages
// from the command line itself, so that they cannot drift from it:
//
//	lvhook __man                lvhook(8), roff, on stdout
//	lvhook __completion bash    bash completion, on stdout
func manCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "__man",
		Hidden: true,
		Usage:  "write the lvhook(8) man page (roff) on stdout",
		Action: func(c *cli.Context) error {
			page, err := manPage(newApp(e))
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}

func completionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "__completion",
		Hidden:    true,
		Usage:     "write a shell completion script on stdout",
		ArgsUsage: "bash",
		Action: func(c *cli.Context) error {
			if c.Args().First() != "bash" {
				return fmt.Errorf("__completion: only bash is supported, not %q", c.Args().First())
			}
			_, err := io.WriteString(c.App.Writer, bashCompletion(newApp(e)))
			return err
		},
	}
}

// manDescription opens lvhook(8).
const manDescription = `lvhook keeps every LV a libvirt domain uses locked by lvmlockd (sanlock) on
the one host that runs it, on a volume group shared by several KVM hosts
(vgcreate --shared). A second start of the domain elsewhere is refused at
once, and a live migration hands the LVs over: both hosts hold them shared
while memory is copied, then only the destination, exclusive again.

One binary plays several roles. Installed as /etc/libvirt/hooks/qemu.d/lvhook
it is libvirt's qemu hook: prepare begin activates the domain's LVs
exclusively (lvchange -aey, one call per volume group, rolled back on any
failure), release end deactivates them, migrate begin marks an incoming
migration so that the following prepare takes them shared. The hook never
calls libvirtd and never writes on stdout. As lvhook daemon (lvhook.service)
it is the lock helper: it downgrades an outgoing migration's LVs when the
destination's hook asks, over mutual TLS, and repairs what no hook covers.
As lvhook check it shows what is locked where and what is wrong. As lvhook
kill-vg, lvm.conf's lvmlockctl_kill_command, it makes a VG whose lease
storage this host lost unwritable here and stops its domains, so that the
watchdog need not reset the whole host.`

// manSections follow the commands in lvhook(8).
const manSections = `
# CHECK

    %s

# EVACUATE

    %s

# KILL-VG

    %s

# FILES

/etc/lvhook/lvhook.toml
:   configuration, optional; every key with its default is in the file the package installs

/etc/libvirt/hooks/qemu.d/lvhook
:   libvirt's hook entry, a configuration file; to stop lvhook acting on domain events, add exit 0 at its top (kept by deb and rpm upgrades) or delete it (deb upgrades leave it deleted)

/run/lvhook
:   runtime state: incoming-migration markers, the LVs of each running domain, failed deactivations, what the lock helper could not repair, and killed/VG.json, what kill-vg did to a VG (until kill-vg --recover)

/run/lvhook/evacuating
:   this host is evacuating (lvhook evacuate): its lock helper tells the peers it is draining; removed at the end, kept at shutdown

/usr/lib/systemd/system/lvhook.service
:   the lock helper

/usr/lib/systemd/system/lvhook-evacuate.service
:   runs lvhook evacuate --at-shutdown when the host shuts down, before libvirt-guests and libvirtd stop, while the network is up; it does nothing unless evacuate.at_shutdown = true

# ENVIRONMENT

LVHOOK_CONFIG
:   another configuration file, which must then exist (libvirt passes no environment to hooks: for tests and the command line only)

# EXIT STATUS

0 on success; 1 when the hook refuses or fails (libvirt shows its one line of stderr), when check finds problems, when evacuate did not migrate every domain, when kill-vg could not make every LV of the VG unwritable, or when kill-vg --recover cannot recover yet; 2 on a usage error, when check could not check, when evacuate did nothing, or when kill-vg refuses to act (lvmlockd is not killing the VG). The hook exits 0 at reconnect, attach and unknown ops whatever goes wrong (libvirt kills a running guest when reconnect fails), and refuses prepare, migrate and release when its configuration file cannot be used.

# SEE ALSO

lvmlockd(8), lvmlockctl(8), sanlock(8), lvchange(8), dmsetup(8), lvm.conf(5), virsh(1), https://libvirt.org/hooks.html
`

// manPage renders lvhook(8) from the command line definition.
func manPage(app *cli.App) (string, error) {
	app.Description = manDescription
	usage := []string{"/etc/libvirt/hooks/qemu.d/lvhook DOMAIN OP SUBOP EXTRA   (run by libvirtd, domain XML on stdin)"}
	for _, c := range app.VisibleCommands() {
		if c.UsageText == "" {
			opts := ""
			if len(c.VisibleFlags()) > 0 {
				opts = " [options]"
			}
			line := strings.TrimSpace("lvhook " + c.Name + opts + " " + c.ArgsUsage)
			usage = append(usage, line)
			// A one-line usage is rendered as markdown, where "[X] (Y)"
			// would be a link.
			c.UsageText = strings.NewReplacer("[", `\[`, "]", `\]`).Replace(line)
			continue
		}
		usage = append(usage, c.UsageText)
	}
	app.UsageText = strings.Join(usage, "\n")
	md, err := app.ToMarkdown()
	if err != nil {
		return "", fmt.Errorf("man page: %w", err)
	}
	indent := strings.NewReplacer("\n", "\n    ")
	doc := "% lvhook 8\n\n" + md + fmt.Sprintf(manSections, indent.Replace(checkDoc), indent.Replace(evacuateDoc), indent.Replace(killVGDoc))
	return string(md2man.Render([]byte(doc))), nil
}

// argCompletion completes a command's arguments: check takes domain names.
var argCompletion = map[string]string{
	"check": `$(virsh -r list --all --name 2>/dev/null)`,
}

// bashCompletion writes a completion function for the visible commands and
// their flags; flags that take a value complete file names.
func bashCompletion(app *cli.App) string {
	var b strings.Builder
	b.WriteString(`# bash completion for lvhook(8); generated by "lvhook __completion bash".
_lvhook() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd= i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	case $cmd in
`)
	var names []string
	for _, c := range app.VisibleCommands() {
		names = append(names, c.Names()...)
		flags, valued := flagWords(c.VisibleFlags())
		fmt.Fprintf(&b, "\t%s)\n", strings.Join(c.Names(), "|"))
		if len(valued) > 0 {
			fmt.Fprintf(&b, "\t\tcase $prev in %s) compopt -o default; COMPREPLY=(); return ;; esac\n", strings.Join(valued, "|"))
		}
		words := strings.Join(flags, " ")
		if args := argCompletion[c.Name]; args != "" {
			fmt.Fprintf(&b, "\t\tif [[ $cur == -* ]]; then COMPREPLY=($(compgen -W %q -- \"$cur\")); else COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); fi\n", words, args)
		} else {
			fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n", words)
		}
		b.WriteString("\t\t;;\n")
	}
	top, _ := flagWords(app.VisibleFlags())
	fmt.Fprintf(&b, "\t*)\n\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\t;;\n\tesac\n}\ncomplete -F _lvhook lvhook\n",
		strings.Join(append(names, top...), " "))
	return b.String()
}

// flagWords returns every spelling of flags, and those that take a value.
func flagWords(flags []cli.Flag) (words, valued []string) {
	for _, f := range flags {
		for _, n := range f.Names() {
			w := "--" + n
			if len(n) == 1 {
				w = "-" + n
			}
			words = append(words, w)
			if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() {
				valued = append(valued, w)
			}
		}
	}
	slices.Sort(words)
	return words, valued
}
