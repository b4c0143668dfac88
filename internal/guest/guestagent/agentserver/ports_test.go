package agentserver

import (
	"net"
	"strconv"
	"testing"
)

func TestParseHexAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0016":                         "0.0.0.0:22",
		"00000000000000000000000001000000:0035": "[::1]:53",
		"0000000000000000FFFF00000100007F:01BB": "127.0.0.1:443",
		"B80D0120000000000000000001000000:0050": "[2001:db8::1]:80",
	} {
		addr, port, err := parseHexAddr(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		got := net.JoinHostPort(addr.String(), strconv.Itoa(port))
		if got != want {
			t.Errorf("%s = %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"", "zz:00", "0100007F", "0100007F:XYZ", "01:0016"} {
		if _, _, err := parseHexAddr(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
