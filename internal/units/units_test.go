package units

import "testing"

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{812, "812B"},
		{1024, "1.0KiB"},
		{12_900, "12.6KiB"},
		{50 << 20, "50.0MiB"},
		{64_172_851, "61.2MiB"},
		{3 << 30, "3.0GiB"},
		{-11_744_051, "-11.2MiB"},
	} {
		if got := Bytes(tc.in); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
