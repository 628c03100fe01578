package mux

import (
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestCipherOrder(t *testing.T) {
	for _, tt := range []struct {
		aes  bool
		want string
	}{{true, ssh.CipherAES128GCM}, {false, ssh.CipherChaCha20Poly1305}} {
		got := cipherOrder(tt.aes)
		if got[0] != tt.want || len(got) != 3 {
			t.Errorf("cipherOrder(%v) = %v, want %s first of 3", tt.aes, got, tt.want)
		}
	}
	if got := preferredCiphers(); len(got) != 3 {
		t.Errorf("preferredCiphers() = %v, want 3 AEAD ciphers", got)
	}
}
