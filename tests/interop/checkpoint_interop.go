// Command checkpoint_interop checks pawprint's checkpoints and Merkle proofs with an independent
// implementation: Go's golang.org/x/mod/sumdb/note (C2SP signed notes) and sumdb/tlog (RFC 6962 trees).
//
// It reads one JSON request on stdin and writes one JSON answer on stdout; tests/interop/test_go_interop.py
// builds it offline against Debian's golang-golang-x-mod-dev (GOPATH mode, /usr/share/gocode) and drives it.
// It decides nothing itself: every check's outcome (accepted, or the Go error) is reported for the test to
// compare with what pawprint says.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Leaf  string   `json:"leaf_hash"` // base64
	Root  string   `json:"root"`      // base64
	Proof []string `json:"proof"`     // base64 hashes
}

type consistency struct {
	Old     int64    `json:"old"`
	New     int64    `json:"new"`
	OldRoot string   `json:"old_root"`
	NewRoot string   `json:"new_root"`
	Proof   []string `json:"proof"`
}

type request struct {
	VerifierKey string        `json:"verifier_key"` // the log's published C2SP verifier key
	KeyName     string        `json:"key_name"`     // with PublicKey: Go derives the verifier key itself
	PublicKey   string        `json:"public_key"`   // base64 raw Ed25519 key
	Notes       []string      `json:"notes"`        // checkpoint notes to open with VerifierKey
	Leaves      []string      `json:"leaves"`       // base64 leaf data, in log order
	Inclusion   []inclusion   `json:"inclusion"`
	Consistency []consistency `json:"consistency"`
	SignerKey   string        `json:"signer_key"` // PRIVATE+KEY+... : Go signs SignText with it
	SignText    string        `json:"sign_text"`
}

type opened struct {
	Error      string   `json:"error,omitempty"`
	Origin     string   `json:"origin,omitempty"`
	Size       int64    `json:"size"`
	Root       string   `json:"root,omitempty"`
	Extensions []string `json:"extensions,omitempty"`
	Verified   []string `json:"verified,omitempty"`   // "name hash" of each verified signature
	Unverified []string `json:"unverified,omitempty"` // "name hash" of each signature by an unknown key
}

type answer struct {
	VerifierKey string   `json:"verifier_key,omitempty"` // note.NewEd25519VerifierKey(KeyName, PublicKey)
	Notes       []opened `json:"notes"`
	Roots       []string `json:"roots"`     // tlog.TreeHash of the first n leaves, n = 1..len(Leaves)
	LeafHashes  []string `json:"leaf_hashes"`
	Inclusion   []string `json:"inclusion"` // "ok" or the error
	Consistency []string `json:"consistency"`
	Signed      string   `json:"signed,omitempty"` // SignText signed by SignerKey
	Error       string   `json:"error,omitempty"`
}

func b64(h []byte) string { return base64.StdEncoding.EncodeToString(h) }

func hash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != len(h) {
		return h, fmt.Errorf("not a base64 hash: %q", s)
	}
	copy(h[:], raw)
	return h, nil
}

func hashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, 0, len(list))
	for _, s := range list {
		h, err := hash(s)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// parseCheckpoint reads a note text as c2sp.org/tlog-checkpoint defines it: origin, tree size (decimal, no
// leading zeros), base64 root hash, then optional non-empty extension lines.
func parseCheckpoint(text string, o *opened) error {
	if !strings.HasSuffix(text, "\n") {
		return fmt.Errorf("checkpoint text does not end in a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return fmt.Errorf("checkpoint text has %d lines, fewer than 3", len(lines))
	}
	if lines[0] == "" {
		return fmt.Errorf("empty origin")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return fmt.Errorf("malformed tree size %q", lines[1])
	}
	root, err := hash(lines[2])
	if err != nil || b64(root[:]) != lines[2] {
		return fmt.Errorf("malformed root hash %q", lines[2])
	}
	for _, ext := range lines[3:] {
		if ext == "" {
			return fmt.Errorf("empty extension line")
		}
	}
	o.Origin, o.Size, o.Root, o.Extensions = lines[0], size, lines[2], lines[3:]
	return nil
}

func run(req request) answer {
	var ans answer
	if req.KeyName != "" {
		pub, err := base64.StdEncoding.DecodeString(req.PublicKey)
		if err == nil {
			ans.VerifierKey, err = note.NewEd25519VerifierKey(req.KeyName, ed25519.PublicKey(pub))
		}
		if err != nil {
			ans.Error = "verifier key: " + err.Error()
			return ans
		}
	}
	var verifiers note.Verifiers
	if req.VerifierKey != "" {
		v, err := note.NewVerifier(req.VerifierKey)
		if err != nil {
			ans.Error = "note.NewVerifier: " + err.Error()
			return ans
		}
		verifiers = note.VerifierList(v)
	}
	for _, msg := range req.Notes {
		var o opened
		n, err := note.Open([]byte(msg), verifiers)
		if err == nil {
			err = parseCheckpoint(n.Text, &o)
			for _, s := range n.Sigs {
				o.Verified = append(o.Verified, fmt.Sprintf("%s %08x", s.Name, s.Hash))
			}
			for _, s := range n.UnverifiedSigs {
				o.Unverified = append(o.Unverified, fmt.Sprintf("%s %08x", s.Name, s.Hash))
			}
		}
		if err != nil {
			o = opened{Error: err.Error()}
		}
		ans.Notes = append(ans.Notes, o)
	}
	// The tree, as tlog stores it, and its root at every size.
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x < 0 || x >= int64(len(stored)) {
				return nil, fmt.Errorf("no stored hash %d", x)
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	for i, leaf := range req.Leaves {
		data, err := base64.StdEncoding.DecodeString(leaf)
		if err != nil {
			ans.Error = "leaf: " + err.Error()
			return ans
		}
		h := tlog.RecordHash(data)
		ans.LeafHashes = append(ans.LeafHashes, b64(h[:]))
		more, err := tlog.StoredHashes(int64(i), data, reader)
		if err != nil {
			ans.Error = "tlog.StoredHashes: " + err.Error()
			return ans
		}
		stored = append(stored, more...)
		root, err := tlog.TreeHash(int64(i+1), reader)
		if err != nil {
			ans.Error = "tlog.TreeHash: " + err.Error()
			return ans
		}
		ans.Roots = append(ans.Roots, b64(root[:]))
	}
	for _, p := range req.Inclusion {
		proof, err := hashes(p.Proof)
		var leaf, root tlog.Hash
		if err == nil {
			leaf, err = hash(p.Leaf)
		}
		if err == nil {
			root, err = hash(p.Root)
		}
		if err == nil {
			err = tlog.CheckRecord(tlog.RecordProof(proof), p.Size, root, p.Index, leaf)
		}
		ans.Inclusion = append(ans.Inclusion, result(err))
	}
	for _, p := range req.Consistency {
		proof, err := hashes(p.Proof)
		var oldRoot, newRoot tlog.Hash
		if err == nil {
			oldRoot, err = hash(p.OldRoot)
		}
		if err == nil {
			newRoot, err = hash(p.NewRoot)
		}
		if err == nil {
			err = tlog.CheckTree(tlog.TreeProof(proof), p.New, newRoot, p.Old, oldRoot)
		}
		ans.Consistency = append(ans.Consistency, result(err))
	}
	if req.SignerKey != "" {
		s, err := note.NewSigner(req.SignerKey)
		var signed []byte
		if err == nil {
			signed, err = note.Sign(&note.Note{Text: req.SignText}, s)
		}
		if err != nil {
			ans.Error = "note.Sign: " + err.Error()
			return ans
		}
		ans.Signed = string(signed)
	}
	return ans
}

func result(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

func main() {
	var req request
	dec := json.NewDecoder(os.Stdin)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "checkpoint_interop: bad request:", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(run(req)); err != nil {
		fmt.Fprintln(os.Stderr, "checkpoint_interop:", err)
		os.Exit(1)
	}
}
