package proto

import "fmt"

// MaxNameLen bounds playnode and service names. 63 is the longest DNS label,
// so every valid hostname label is a valid playnode name.
const MaxNameLen = 63

// ValidateName reports whether s is a safe playnode or service name: 1 to
// MaxNameLen characters from [A-Za-z0-9._-], starting with a letter or digit.
// The set keeps names usable as file-name parts, log values and store-file
// tokens without quoting; kind ("playnode", "service") only words the error.
func ValidateName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s name is empty", kind)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s name %.20q... is %d bytes long, the limit is %d", kind, s, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%s name %q: character %q at offset %d is not allowed (use A-Z a-z 0-9 . _ -, starting with a letter or digit)", kind, s, c, i)
		}
	}
	return nil
}
