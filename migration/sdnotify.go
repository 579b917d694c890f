package migration

import (
	"errors"
	"net"
	"os"
)

// Notify sends state to systemd's notification socket ($NOTIFY_SOCKET), as
// sd_notify(3) does: one datagram on a UNIX socket, a leading "@" naming an
// abstract socket. Without $NOTIFY_SOCKET (not started by systemd with
// Type=notify) it does nothing.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] != '/' && path[0] != '@' {
		return errors.New("NOTIFY_SOCKET is neither a path nor an abstract socket name")
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
