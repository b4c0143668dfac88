package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// timeLayout is fixed-width UTC, so stored times sort as strings.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// encodeTime stores the zero time as the empty string ("never").
func encodeTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

func decodeTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("decode stored time %q: %w", s, err)
	}
	return t, nil
}

// decodeTimes decodes pairs of (source, destination).
func decodeTimes(pairs ...any) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		t, err := decodeTime(pairs[i].(string))
		if err != nil {
			return err
		}
		*pairs[i+1].(*time.Time) = t
	}
	return nil
}

func randomID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }
