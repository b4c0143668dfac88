// Package namegen makes friendly VM names (adjective-noun), valid DNS labels.
package namegen

import (
	"crypto/rand"
	"math/big"
)

var adjectives = []string{"brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lively", "merry",
	"nimble", "proud", "quick", "quiet", "rapid", "shiny", "snappy", "steady", "swift", "tidy", "vivid", "witty", "zesty", "bold",
	"bright", "clever", "cosy", "daring", "fresh", "lucky"}

var nouns = []string{"otter", "falcon", "badger", "heron", "lynx", "marten", "osprey", "panda", "quokka", "raven",
	"salmon", "tapir", "walrus", "yak", "zebra", "beaver", "condor", "dingo", "ferret", "gecko", "ibis", "jackal", "koala",
	"lemur", "moose", "newt", "ocelot", "puffin", "robin", "stoat"}

// New returns a random adjective-noun name; taken reports names in use, and
// New tries again (bounded) before adding a numeric suffix.
func New(taken func(string) bool) string {
	for i := 0; i < 20; i++ {
		n := pick(adjectives) + "-" + pick(nouns)
		if taken == nil || !taken(n) {
			return n
		}
	}
	for i := 2; ; i++ {
		n := pick(adjectives) + "-" + pick(nouns) + "-" + itoa(i)
		if !taken(n) {
			return n
		}
	}
}

func pick(words []string) string {
	i, err := rand.Int(rand.Reader, big.NewInt(int64(len(words))))
	if err != nil {
		return words[0]
	}
	return words[i.Int64()]
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
